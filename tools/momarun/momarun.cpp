//===- momarun.cpp - Runs compiled MoMa artifacts -------------------------===//
//
//   momarun init ARTIFACT -o W.safetensors [--seed N]
//   momarun eval ARTIFACT --weights W.safetensors --data PREFIX [--batches N]
//   momarun grad ARTIFACT --weights W.safetensors --tokens T.bin --out
//   O.safetensors
//   momarun upcycle --from CKPT --to ARTIFACT -o W.safetensors
//
// ARTIFACT is a directory written by `momac MODEL.json -o ARTIFACT`. momarun
// dlopens its model.so and calls the compiled entry points; it compiles
// nothing and holds no model math of its own.
//
//===----------------------------------------------------------------------===//

#include "runtime/artifact/LoadedArtifact.h"
#include "runtime/data/Corpus.h"
#include "runtime/data/IndexedDataset.h"
#include "runtime/data/SequenceStream.h"
#include "runtime/model/Upcycle.h"
#include "runtime/model/Weights.h"
#include "lib/config/ModelStats.h"
#include "lib/support/AtomicFile.h"
#include "lib/support/SvgLineChart.h"
#include "runtime/generate/Generator.h"
#include "runtime/train/AuxRouterTrainer.h"
#include "runtime/train/RunRecord.h"
#include "runtime/train/Trainer.h"
#include "runtime/train/TrainingCheckpoint.h"
#include "runtime/comm/Communicator.h"
#include "runtime/fsdp/ShardedTrainer.h"

#include "lib/safetensors/Safetensors.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>
#include <cstring>
#include <limits>
#include <malloc.h>

using namespace momac;
namespace cl = llvm::cl;

namespace {

cl::OptionCategory momarunCategory("momarun options");

cl::SubCommand initCommand("init", "Write randomly initialized weights "
                                   "(MODEL_SPEC section 2) for an artifact");
cl::SubCommand evalCommand("eval", "Mean loss, overall and per modality, of "
                                   "weights on held-out data");

cl::SubCommand gradCommand("grad",
                           "Loss, per-modality losses and the gradient of "
                           "every parameter for one batch (MODEL_SPEC "
                           "section 8)");

cl::SubCommand trainCommand("train",
                            "Train with the compiled gradient and AdamW "
                            "steps (MODEL_SPEC section 7)");

cl::SubCommand trainAuxCommand(
    "train-aux", "Train the auxiliary routers of a trained model (MODEL_SPEC "
                 "section 6), the model frozen");

cl::SubCommand generateCommand(
    "generate", "Continue prompts token by token with causal routing by the "
                "auxiliary routers and a key/value cache (MODEL_SPEC section "
                "6)");

cl::SubCommand plotCommand(
    "plot", "Draw the loss curves of training runs against training FLOPs, "
            "per modality, as SVG, and print their final losses");

cl::SubCommand upcycleCommand(
    "upcycle", "Build the weights of a model with more experts from a "
               "checkpoint of one with fewer (MODEL_SPEC section 7)");

cl::SubCommand ckptCommand(
    "ckpt", "Checkpoint tools: `ckpt consolidate RUN/ -o W.safetensors` puts "
            "the shard set of a run on several ranks (or its one-rank "
            "checkpoint) into one MODEL_SPEC checkpoint");

cl::SubCommand corpusCommand("corpus",
                             "Write a Megatron indexed dataset for a model: "
                             "synthetic mixed-modal data, or token ids from "
                             "text/JSONL");

cl::opt<std::string> initArtifact(cl::Positional, cl::Required,
                                  cl::desc("<artifact directory>"),
                                  cl::sub(initCommand),
                                  cl::cat(momarunCategory));
cl::opt<std::string> initOutput("o", cl::Required,
                                cl::desc("Weights to write (.safetensors)"),
                                cl::value_desc("file"), cl::sub(initCommand),
                                cl::cat(momarunCategory));
cl::opt<uint64_t> initSeed("seed", cl::init(0),
                           cl::desc("Seed of momarun's generator (default 0)"),
                           cl::sub(initCommand), cl::cat(momarunCategory));

cl::opt<std::string> evalArtifact(cl::Positional, cl::Required,
                                  cl::desc("<artifact directory>"),
                                  cl::sub(evalCommand),
                                  cl::cat(momarunCategory));
cl::opt<std::string> evalWeights("weights", cl::Required,
                                 cl::desc("Weights (.safetensors)"),
                                 cl::value_desc("file"), cl::sub(evalCommand),
                                 cl::cat(momarunCategory));
cl::opt<std::string> evalData("data", cl::Required,
                              cl::desc("Megatron indexed dataset prefix "
                                       "(PREFIX.bin, PREFIX.idx)"),
                              cl::value_desc("prefix"), cl::sub(evalCommand),
                              cl::cat(momarunCategory));
cl::opt<unsigned> evalBatchSize(
    "batch-size", cl::init(0),
    cl::desc("Sequences per batch, 1 to the train.batch_size the artifact "
             "was compiled for (default: that batch size)"),
    cl::sub(evalCommand), cl::cat(momarunCategory));
cl::opt<unsigned> evalBatches(
    "batches", cl::init(0),
    cl::desc("Batches to evaluate, at least 1 (default: one pass over the "
             "data, at least one batch)"),
    cl::sub(evalCommand), cl::cat(momarunCategory));
cl::opt<bool> evalJson("json", cl::desc("Print the result as one JSON object"),
                       cl::sub(evalCommand), cl::cat(momarunCategory));
cl::opt<bool> evalCausal(
    "causal",
    cl::desc("Also evaluate with causal routing (MODEL_SPEC section 6: a "
             "token goes to an expert, or through a MoD block, iff its "
             "auxiliary router's score is above 0.5), and report per router "
             "how often that disagrees with the batch routing (models with "
             "aux_routers)"),
    cl::sub(evalCommand), cl::cat(momarunCategory));

cl::opt<std::string> gradArtifact(cl::Positional, cl::Required,
                                  cl::desc("<artifact directory>"),
                                  cl::sub(gradCommand),
                                  cl::cat(momarunCategory));
cl::opt<std::string> gradWeights("weights", cl::Required,
                                 cl::desc("Weights (.safetensors)"),
                                 cl::value_desc("file"), cl::sub(gradCommand),
                                 cl::cat(momarunCategory));
cl::opt<std::string>
    gradTokens("tokens", cl::Required,
               cl::desc("Token ids: raw little-endian int32, [B, S+1], B from 1 "
                        "to the train.batch_size the artifact was compiled "
                        "for"),
               cl::value_desc("file"), cl::sub(gradCommand),
               cl::cat(momarunCategory));
cl::opt<std::string> gradOutput("out", cl::Required,
                                cl::desc("Where to write loss, loss.<modality> "
                                         "and grad.<name> (.safetensors)"),
                                cl::value_desc("file"), cl::sub(gradCommand),
                                cl::cat(momarunCategory));
cl::opt<std::string> gradNoise(
    "noise",
    cl::desc("Router logit noise to add, raw little-endian float32 "
             "[n_layers, B*S, max experts] (models with moe.gumbel; for "
             "testing). Default: none, the evaluation routing of the "
             "numerical contract"),
    cl::value_desc("file"), cl::sub(gradCommand), cl::cat(momarunCategory));

cl::opt<bool> gradAux(
    "aux",
    cl::desc("The auxiliary routers' objective instead (MODEL_SPEC section "
             "6, what train-aux trains): writes aux_loss, bce.<router>, "
             "confusion.<router> ([true positives, predicted positives, "
             "chosen, decisions]) and grad.<aux parameter>"),
    cl::sub(gradCommand), cl::cat(momarunCategory));

cl::opt<std::string> trainArtifact(cl::Positional, cl::Required,
                                   cl::desc("<artifact directory>"),
                                   cl::sub(trainCommand),
                                   cl::cat(momarunCategory));
cl::opt<std::string> trainData("data", cl::Required,
                               cl::desc("Megatron indexed dataset prefix"),
                               cl::value_desc("prefix"), cl::sub(trainCommand),
                               cl::cat(momarunCategory));
cl::opt<int64_t> trainSteps("steps", cl::Required,
                            cl::desc("Steps to run, at least 1 (the schedule "
                                     "still spans train.total_steps)"),
                            cl::sub(trainCommand), cl::cat(momarunCategory));
cl::opt<std::string> trainOut("out", cl::Required,
                              cl::desc("Run directory: metrics.jsonl, "
                                       "checkpoint.safetensors"),
                              cl::value_desc("dir"), cl::sub(trainCommand),
                              cl::cat(momarunCategory));
cl::opt<std::string> trainInit("init",
                               cl::desc("Initial weights (default: momarun "
                                        "init with --seed)"),
                               cl::value_desc("file"), cl::sub(trainCommand),
                               cl::cat(momarunCategory));
cl::opt<uint64_t> trainSeed("seed", cl::init(0),
                            cl::desc("Seed of the initial weights and of the "
                                     "router noise (default: train.seed)"),
                            cl::sub(trainCommand), cl::cat(momarunCategory));
cl::opt<std::string> trainDataPositionFrom(
    "data-position-from",
    cl::desc("Start the data stream where this checkpoint's run stopped "
             "(its data_position), e.g. stage 1 of an upcycled model; the "
             "optimizer and the LR schedule start fresh"),
    cl::value_desc("checkpoint"), cl::sub(trainCommand),
    cl::cat(momarunCategory));
cl::opt<bool> trainResume("resume",
                          cl::desc("Continue from the run's latest "
                                   "checkpoint: RUN/checkpoint.safetensors, "
                                   "or the shard set of a run on several "
                                   "ranks; on any number of ranks"),
                          cl::sub(trainCommand), cl::cat(momarunCategory));
cl::opt<int64_t> trainCheckpointEvery(
    "checkpoint-every", cl::init(100),
    cl::desc("Steps between checkpoints, at least 1 (one is always written "
             "at the end; default 100)"),
    cl::sub(trainCommand), cl::cat(momarunCategory));
cl::opt<int64_t> trainSkipNonFinite(
    "skip-nonfinite", cl::init(0),
    cl::desc("Skip the update of up to N steps whose loss or gradient is "
             "NaN or infinite, logged (default 0: the first such step stops "
             "training with an error, after checkpointing the weights from "
             "before it)"),
    cl::value_desc("N"), cl::sub(trainCommand), cl::cat(momarunCategory));
cl::opt<double> trainMemoryLimit(
    "memory-limit",
    cl::desc("Refuse to start when the training state (weights, gradients, "
             "AdamW moments) needs more than this many GB, > 0 (default: "
             "the machine's physical memory)"),
    cl::value_desc("GB"), cl::sub(trainCommand), cl::cat(momarunCategory));
cl::opt<int64_t> trainLogEvery(
    "log-every", cl::init(10),
    cl::desc("Steps between progress lines when not on a terminal, at least "
             "1 (default 10)"),
    cl::sub(trainCommand), cl::cat(momarunCategory));

cl::opt<double> trainCommTimeout(
    "comm-timeout", cl::init(60.0),
    cl::desc("On several ranks (mpirun): seconds a collective may take before "
             "the run stops with an error naming it, because another rank is "
             "lost or stalled; on GPUs (NCCL), also how long a step may wait "
             "for the GPU (default 60)"),
    cl::value_desc("seconds"), cl::sub(trainCommand),
    cl::cat(momarunCategory));

cl::opt<bool> trainFsdp(
    "fsdp",
    cl::desc("Train with the sharded step (an artifact compiled with momac "
             "--fsdp) also on one rank, its gathers and reduce-scatters over "
             "a communicator of one (NCCL on a GPU): checks the sharded "
             "path against the plain one (several ranks always shard)"),
    cl::sub(trainCommand), cl::cat(momarunCategory));

cl::opt<bool> trainBalanceModalities(
    "balance-modalities",
    cl::desc("On several ranks (mpirun): deal each step's sequences so that "
             "every rank's text:image token mix stays near the model's "
             "text:image expert ratio (the MoMa paper's fix for stragglers); "
             "without it, rank r trains the r-th share of the step's "
             "sequences (MODEL_SPEC section 8)"),
    cl::sub(trainCommand), cl::cat(momarunCategory));

cl::list<std::string> ckptArguments(cl::Positional, cl::OneOrMore,
                                    cl::desc("consolidate <run directory>"),
                                    cl::sub(ckptCommand),
                                    cl::cat(momarunCategory));
cl::opt<std::string> ckptOutput("o", cl::Required,
                                cl::desc("The consolidated checkpoint to write"),
                                cl::value_desc("W.safetensors"),
                                cl::sub(ckptCommand), cl::cat(momarunCategory));

cl::opt<std::string> trainAuxArtifact(cl::Positional, cl::Required,
                                      cl::desc("<artifact directory>"),
                                      cl::sub(trainAuxCommand),
                                      cl::cat(momarunCategory));
cl::opt<std::string> trainAuxWeights(
    "weights", cl::Required,
    cl::desc("The trained model (weights or checkpoint); training starts "
             "from its aux routers"),
    cl::value_desc("file"), cl::sub(trainAuxCommand), cl::cat(momarunCategory));
cl::opt<std::string> trainAuxData("data", cl::Required,
                                  cl::desc("Megatron indexed dataset prefix"),
                                  cl::value_desc("prefix"),
                                  cl::sub(trainAuxCommand),
                                  cl::cat(momarunCategory));
cl::opt<int64_t> trainAuxSteps(
    "steps", cl::Required,
    cl::desc("Steps of train.batch_size sequences, at least 1; the LR "
             "schedule of train.* spans them (warm-up: at most a tenth)"),
    cl::sub(trainAuxCommand), cl::cat(momarunCategory));
cl::opt<std::string> trainAuxOut(
    "out", cl::Required,
    cl::desc("Run directory: metrics.jsonl (per router: bce, accuracy, "
             "precision, recall), weights.safetensors"),
    cl::value_desc("dir"), cl::sub(trainAuxCommand), cl::cat(momarunCategory));
cl::opt<int64_t> trainAuxLogEvery(
    "log-every", cl::init(10),
    cl::desc("Steps between progress lines, at least 1 (default 10)"),
    cl::sub(trainAuxCommand), cl::cat(momarunCategory));

cl::opt<std::string> generateArtifact(cl::Positional, cl::Required,
                                      cl::desc("<artifact directory>"),
                                      cl::sub(generateCommand),
                                      cl::cat(momarunCategory));
cl::opt<std::string> generateWeights("weights", cl::Required,
                                     cl::desc("Weights (.safetensors)"),
                                     cl::value_desc("file"),
                                     cl::sub(generateCommand),
                                     cl::cat(momarunCategory));
cl::opt<std::string> generatePrompt(
    "prompt", cl::Required,
    cl::desc("Prompts, one per line: token ids separated by spaces, or JSONL "
             "(.jsonl: a list or {\"tokens\": [...]}); up to train.batch_size "
             "prompts decode together"),
    cl::value_desc("file"), cl::sub(generateCommand), cl::cat(momarunCategory));
cl::opt<int64_t> generateMaxNew(
    "max-new", cl::init(32),
    cl::desc("New tokens per prompt, at least 1; prompt + new must fit in "
             "seq_len (default 32)"),
    cl::value_desc("N"), cl::sub(generateCommand), cl::cat(momarunCategory));
cl::opt<double> generateTemperature(
    "temperature", cl::init(1.0),
    cl::desc("Softmax temperature, >= 0; 0 is greedy (default 1)"),
    cl::sub(generateCommand), cl::cat(momarunCategory));
cl::opt<double> generateTopP(
    "top-p", cl::init(1.0),
    cl::desc("Nucleus sampling: keep the most likely tokens up to this "
             "probability mass, in (0, 1] (default 1: all)"),
    cl::sub(generateCommand), cl::cat(momarunCategory));
cl::opt<uint64_t> generateSeed("seed", cl::init(0),
                               cl::desc("Seed of the sampling (default 0)"),
                               cl::sub(generateCommand),
                               cl::cat(momarunCategory));
cl::opt<std::string> generateOut(
    "out", cl::init("-"),
    cl::desc("Where to write the new tokens: one line of ids per prompt, or "
             "JSONL ({\"tokens\": [...]}) for a .jsonl name (default: "
             "stdout)"),
    cl::value_desc("file"), cl::sub(generateCommand), cl::cat(momarunCategory));
cl::opt<bool> generateModalityOfNext(
    "modality-of-next",
    cl::desc("Also say which modality each new token belongs to (id/modality "
             "in text, \"modalities\" in JSONL)"),
    cl::sub(generateCommand), cl::cat(momarunCategory));
cl::opt<std::string> generateLogits(
    "logits",
    cl::desc("Write the first prompt's logits at every decoded position, raw "
             "float32 [positions, vocab] (for testing)"),
    cl::value_desc("file"), cl::sub(generateCommand), cl::cat(momarunCategory));

cl::list<std::string> plotRuns(cl::Positional, cl::OneOrMore,
                               cl::desc("<run directory>..."),
                               cl::sub(plotCommand), cl::cat(momarunCategory));
cl::opt<std::string> plotOutput("o", cl::Required,
                                cl::desc("The SVG file to write"),
                                cl::value_desc("file"), cl::sub(plotCommand),
                                cl::cat(momarunCategory));
cl::opt<int64_t> plotSmooth(
    "smooth", cl::init(10),
    cl::desc("Average each curve over its last N steps, at least 1 (1: the "
             "raw per-step losses; default 10); the final losses are means "
             "over the last N steps too"),
    cl::value_desc("N"), cl::sub(plotCommand), cl::cat(momarunCategory));

cl::opt<std::string> upcycleFrom(
    "from", cl::Required,
    cl::desc("Stage-1 checkpoint or weights (.safetensors) of a model with "
             "one expert per group (or dense)"),
    cl::value_desc("file"), cl::sub(upcycleCommand), cl::cat(momarunCategory));
cl::opt<std::string> upcycleTo(
    "to", cl::Required,
    cl::desc("Artifact of the model to build (its experts per group a "
             "multiple of the checkpoint's)"),
    cl::value_desc("artifact"), cl::sub(upcycleCommand),
    cl::cat(momarunCategory));
cl::opt<std::string> upcycleOutput("o", cl::Required,
                                   cl::desc("Weights to write (.safetensors)"),
                                   cl::value_desc("file"),
                                   cl::sub(upcycleCommand),
                                   cl::cat(momarunCategory));
cl::opt<uint64_t> upcycleSeed(
    "seed", cl::init(0),
    cl::desc("Seed of the fresh routers; they equal `momarun init --seed` "
             "of the target (default 0)"),
    cl::sub(upcycleCommand), cl::cat(momarunCategory));

cl::opt<std::string> corpusModel(cl::Positional, cl::Required,
                                 cl::desc("<model.json or artifact directory>"),
                                 cl::sub(corpusCommand),
                                 cl::cat(momarunCategory));
cl::opt<std::string> corpusOut("out", cl::Required,
                               cl::desc("Dataset prefix to write (PREFIX.bin, "
                                        "PREFIX.idx)"),
                               cl::value_desc("prefix"), cl::sub(corpusCommand),
                               cl::cat(momarunCategory));
cl::opt<int64_t> corpusSynthetic(
    "synthetic", cl::init(0),
    cl::desc("Generate this many synthetic documents, at least 1: "
             "byte-level text, and images of correlated codes between "
             "begin/end sentinels"),
    cl::sub(corpusCommand), cl::cat(momarunCategory));
cl::opt<std::string> corpusInput(
    "input",
    cl::desc("Token ids to convert: one document per line, ids separated by "
             "spaces, or JSONL (.jsonl) with a list or {\"tokens\": [...]}"),
    cl::value_desc("file"), cl::sub(corpusCommand), cl::cat(momarunCategory));
cl::opt<int64_t> corpusImageTokens(
    "image-tokens", cl::init(64),
    cl::desc("Codes per synthetic image, 1 to 1048576 (a square grid; "
             "Chameleon uses 1024)"),
    cl::sub(corpusCommand), cl::cat(momarunCategory));
cl::opt<uint64_t> corpusSeed("seed", cl::init(0),
                             cl::desc("Seed of the synthetic corpus"),
                             cl::sub(corpusCommand), cl::cat(momarunCategory));
cl::list<std::string>
    corpusText("text",
               cl::desc("Files whose bytes make the synthetic text (default: "
                        "/usr/share/common-licenses)"),
               cl::value_desc("file"), cl::sub(corpusCommand),
               cl::cat(momarunCategory));

llvm::Error runtimeError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message.str());
}

/// One buffer per result of `entry`, sized from the manifest.
std::vector<std::vector<float>> allocateResults(const EntryPointSpec &entry) {
  std::vector<std::vector<float>> results;
  for (const BufferSpec &spec : entry.results)
    results.emplace_back(spec.numElements());
  return results;
}

/// The buffer array of an entry-point call, bound by name: tokens,
/// parameters, the router noise when the entry point takes it (`noise`,
/// zero-filled to its size when empty: evaluation routing) and the results.
llvm::Expected<std::vector<void *>>
entryBuffers(const EntryPointSpec &entry, std::vector<int32_t> &tokens,
             int32_t &batchRows, Weights &weights, std::vector<float> &noise,
             std::vector<std::vector<float>> &results) {
  llvm::StringMap<void *> arguments, resultBuffers;
  arguments["tokens"] = tokens.data();
  if (takesBatchRows(entry))
    arguments[kBatchRowsArgument] = &batchRows;
  for (size_t i = 0; i < weights.size(); ++i)
    arguments[weights.spec(i).name] = weights[i].data();
  for (const BufferSpec &spec : entry.arguments) {
    if (spec.name != kGumbelNoiseArgument)
      continue;
    if (noise.empty())
      noise.assign(spec.numElements(), 0.0f);
    if (int64_t(noise.size()) != spec.numElements())
      return runtimeError(llvm::formatv(
          "the router noise has {0} values, but the '{1}' entry point takes "
          "{2} ([n_layers, B*S, max experts])",
          noise.size(), entry.name, spec.numElements()));
    arguments[spec.name] = noise.data();
  }
  for (auto [spec, result] : llvm::zip(entry.results, results))
    resultBuffers[spec.name] = result.data();
  return bindByName(entry, arguments, resultBuffers);
}

/// Reads a raw little-endian float32 file.
llvm::Expected<std::vector<float>> readFloatFile(llvm::StringRef path) {
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                            /*RequiresNullTerminator=*/false);
  if (!buffer)
    return runtimeError(path + ": cannot read: " + buffer.getError().message());
  llvm::StringRef bytes = (*buffer)->getBuffer();
  if (bytes.empty() || bytes.size() % 4 != 0)
    return runtimeError(llvm::formatv(
        "{0}: {1} bytes is not a whole, nonzero number of float32 values",
        path, bytes.size()));
  std::vector<float> values(bytes.size() / 4);
  std::memcpy(values.data(), bytes.data(), bytes.size());
  return values;
}

/// The largest micro-batch an artifact's entry point takes: its compiled
/// train.batch_size; older artifacts without kBatchRowsArgument take
/// exactly that many sequences.
std::pair<int64_t, int64_t> batchRange(const EntryPointSpec &entry,
                                       const Manifest &manifest) {
  return {takesBatchRows(entry) ? 1 : manifest.batchSize, manifest.batchSize};
}

/// Reads a [B, S+1] int32 token file, 1 <= B <= the artifact's compiled
/// batch size, into a buffer of the compiled size (rows past B unused).
llvm::Expected<std::vector<int32_t>> readTokenFile(llvm::StringRef path,
                                                   const Manifest &manifest,
                                                   const EntryPointSpec &entry,
                                                   int32_t &batchRows) {
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                            /*RequiresNullTerminator=*/false);
  if (!buffer)
    return runtimeError(path + ": cannot read: " + buffer.getError().message());
  llvm::StringRef bytes = (*buffer)->getBuffer();
  const uint64_t rowBytes = 4 * uint64_t(manifest.seqLen + 1);
  if (bytes.empty() || bytes.size() % rowBytes != 0)
    return runtimeError(llvm::formatv(
        "{0}: {1} bytes is not a whole number of sequences of {2} int32 "
        "tokens (seq_len + 1)",
        path, bytes.size(), manifest.seqLen + 1));
  uint64_t rows = bytes.size() / rowBytes;
  auto [fewest, most] = batchRange(entry, manifest);
  if (int64_t(rows) < fewest || int64_t(rows) > most)
    return runtimeError(
        fewest == most
            ? llvm::formatv("{0}: holds {1} sequences, but this artifact takes "
                            "exactly {2} (recompile it with this momac for "
                            "any batch size up to train.batch_size)",
                            path, rows, most)
                  .str()
            : llvm::formatv("{0}: holds {1} sequences, but the artifact takes "
                            "at most {2} (train.batch_size in the model "
                            "description it was compiled from)",
                            path, rows, most)
                  .str());
  batchRows = int32_t(rows);
  std::vector<int32_t> tokens(most * (manifest.seqLen + 1), 0);
  std::memcpy(tokens.data(), bytes.data(), bytes.size());
  for (size_t i = 0; i < rows * (manifest.seqLen + 1); ++i)
    if (tokens[i] < 0 || tokens[i] >= manifest.vocabSize)
      return runtimeError(llvm::formatv(
          "{0}: token {1} of sequence {2} is {3}, outside [0, {4})", path,
          i % (manifest.seqLen + 1), i / (manifest.seqLen + 1), tokens[i],
          manifest.vocabSize));
  return tokens;
}

int fail(llvm::Error error) {
  llvm::WithColor::error(llvm::errs(), "momarun")
      << llvm::toString(std::move(error)) << "\n";
  return 1;
}

int runInit() {
  llvm::Expected<LoadedArtifact> artifact = LoadedArtifact::open(initArtifact);
  if (!artifact)
    return fail(artifact.takeError());
  Weights weights = Weights::initialize(artifact->manifest(), initSeed);
  if (llvm::Error error =
          weights.save(initOutput, {{"seed", std::to_string(initSeed)},
                                    {"model", artifact->manifest().model}}))
    return fail(std::move(error));
  llvm::outs() << "wrote " << weights.size() << " parameters of "
               << artifact->manifest().model << " to " << initOutput << "\n";
  return 0;
}

int runEval() {
  llvm::Expected<LoadedArtifact> artifact = LoadedArtifact::open(evalArtifact);
  if (!artifact)
    return fail(artifact.takeError());
  const Manifest &manifest = artifact->manifest();
  const ModelConfig &config = artifact->config();
  const int64_t weightBytes = computeModelStats(config).parameterBytes;
  const std::string evalWhat =
      "evaluating " + manifest.model + " (its weights)";
  if (llvm::Error error = checkMemoryEstimate(weightBytes, evalWhat))
    return fail(std::move(error));
  if (llvm::Error error = artifact->checkDeviceMemory(weightBytes, evalWhat))
    return fail(std::move(error));
  auto entry = artifact->entryPoint("forward");
  if (!entry)
    return fail(entry.takeError());
  auto [spec, forward] = *entry;
  const EntryPointSpec *causalSpec = nullptr;
  LoadedArtifact::EntryFunction causalForward;
  if (evalCausal) {
    if (!config.auxRouters)
      return fail(runtimeError(
          "--causal: " + manifest.model +
          " has no auxiliary routers to route causally with; add "
          "\"aux_routers\": true to its description, recompile, and train "
          "them (MODEL_SPEC section 6)"));
    auto causal = artifact->entryPoint("forward_causal");
    if (!causal)
      return fail(causal.takeError());
    std::tie(causalSpec, causalForward) = *causal;
  }

  llvm::Expected<Weights> weights = Weights::load(manifest, evalWeights);
  if (!weights)
    return fail(weights.takeError());
  // On a CUDA artifact's GPU for every batch.
  if (llvm::Error error = weights->keepOnDevice(*artifact))
    return fail(std::move(error));
  llvm::Expected<IndexedDataset> dataset = IndexedDataset::open(evalData);
  if (!dataset)
    return fail(dataset.takeError());
  SequenceStreamOptions streamOptions;
  streamOptions.vocabSize = manifest.vocabSize;
  llvm::Expected<SequenceStream> stream =
      SequenceStream::create(*dataset, manifest.seqLen, streamOptions);
  if (!stream)
    return fail(stream.takeError());

  auto [fewest, most] = batchRange(*spec, manifest);
  const int64_t batch =
      evalBatchSize.getNumOccurrences() ? int64_t(evalBatchSize) : most;
  const int64_t seqLen = manifest.seqLen;
  if (batch < fewest || batch > most)
    return fail(runtimeError(llvm::formatv(
        "--batch-size {0}: this artifact takes {1} to {2} sequences per batch "
        "(train.batch_size in the model description it was compiled from)",
        batch, fewest, most)));
  if (evalBatches.getNumOccurrences() && evalBatches == 0)
    return fail(runtimeError("--batches 0: evaluate at least 1 batch (omit "
                             "--batches for one pass over the data)"));
  uint64_t sequencesPerPass = (stream->streamLength() - 1) / seqLen;
  uint64_t batches = evalBatches
                         ? evalBatches
                         : std::max<uint64_t>(1, sequencesPerPass / batch);

  // Results: loss, loss.<modality>..., and aux_loss with auxiliary routers.
  // The compiled [max, S+1] buffer; its first `batch` rows are the batch.
  std::vector<int32_t> tokens(most * (seqLen + 1));
  llvm::MutableArrayRef<int32_t> batchTokens(tokens.data(),
                                             batch * (seqLen + 1));
  int32_t batchRows = int32_t(batch);
  std::vector<std::vector<float>> resultBuffers = allocateResults(*spec);
  std::vector<float> noise; // evaluation routing: none
  auto buffers = entryBuffers(*spec, tokens, batchRows, *weights, noise,
                              resultBuffers);
  if (!buffers)
    return fail(buffers.takeError());
  // Causal routing: loss, loss.<modality>..., then disagreement.<router>.
  std::vector<std::vector<float>> causalResults;
  std::vector<void *> causalBuffers;
  if (causalSpec) {
    causalResults = allocateResults(*causalSpec);
    auto bound = entryBuffers(*causalSpec, tokens, batchRows, *weights, noise,
                              causalResults);
    if (!bound)
      return fail(bound.takeError());
    causalBuffers = std::move(*bound);
  }
  const size_t firstDisagreement = 1 + config.modalities.size();
  double causalLossSum = 0;
  std::vector<double> causalModalitySum(config.modalities.size(), 0);
  std::vector<double> disagreementSum(
      causalSpec ? causalSpec->results.size() - firstDisagreement : 0, 0);

  // Per-modality losses are pooled over every target of the modality.
  size_t modalities = config.modalities.size();
  double lossSum = 0;
  std::vector<double> modalitySum(modalities, 0);
  std::vector<uint64_t> modalityCount(modalities, 0);
  auto start = std::chrono::steady_clock::now();
  for (uint64_t b = 0; b < batches; ++b) {
    if (llvm::Error error = stream->next(batch, batchTokens))
      return fail(std::move(error));
    if (llvm::Error error = forward(buffers->data()))
      return fail(std::move(error));
    lossSum += resultBuffers[0][0];
    std::vector<uint64_t> counts = config.countTargetsByModality(batchTokens);
    if (causalForward) {
      if (llvm::Error error = causalForward(causalBuffers.data()))
        return fail(std::move(error));
      causalLossSum += causalResults[0][0];
      for (size_t m = 0; m < modalities; ++m)
        causalModalitySum[m] +=
            double(causalResults[1 + m][0]) * double(counts[m]);
      for (size_t r = 0; r < disagreementSum.size(); ++r)
        disagreementSum[r] += causalResults[firstDisagreement + r][0];
    }
    for (size_t m = 0; m < modalities; ++m) {
      modalitySum[m] += double(resultBuffers[1 + m][0]) * double(counts[m]);
      modalityCount[m] += counts[m];
    }
  }
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();

  double loss = lossSum / double(batches);
  std::vector<double> modalityLoss(modalities, 0);
  for (size_t m = 0; m < modalities; ++m)
    if (modalityCount[m])
      modalityLoss[m] = modalitySum[m] / double(modalityCount[m]);
  double tokensPerSecond = double(batches * batch * seqLen) / seconds;
  double causalLoss = causalLossSum / double(batches);
  std::vector<double> causalModalityLoss(modalities, 0);
  for (size_t m = 0; m < modalities; ++m)
    if (modalityCount[m])
      causalModalityLoss[m] = causalModalitySum[m] / double(modalityCount[m]);
  // Each router's disagreement, averaged over the batches.
  std::vector<std::pair<std::string, double>> disagreements;
  for (size_t r = 0; r < disagreementSum.size(); ++r)
    disagreements.push_back(
        {causalSpec->results[firstDisagreement + r].name,
         disagreementSum[r] / double(batches)});

  if (evalJson) {
    llvm::json::Object out{{"loss", jsonNumber(loss)},
                           {"batches", int64_t(batches)},
                           {"sequences", int64_t(batches * batch)},
                           {"tokens_per_s", jsonNumber(tokensPerSecond)}};
    for (size_t m = 0; m < modalities; ++m) {
      out["loss." + config.modalities[m].name] = jsonNumber(modalityLoss[m]);
      out["targets." + config.modalities[m].name] = int64_t(modalityCount[m]);
    }
    if (causalSpec) {
      out["causal.loss"] = jsonNumber(causalLoss);
      for (size_t m = 0; m < modalities; ++m)
        out["causal.loss." + config.modalities[m].name] =
            jsonNumber(causalModalityLoss[m]);
      for (const auto &[name, value] : disagreements)
        out[name] = jsonNumber(value);
    }
    llvm::outs() << llvm::formatv("{0}", llvm::json::Value(std::move(out)))
                 << "\n";
    return 0;
  }
  llvm::outs() << llvm::formatv("eval {0}: {1} batches x {2} sequences of {3} "
                                "tokens, loss {4:F4}",
                                manifest.model, batches, batch, seqLen, loss);
  for (size_t m = 0; m < modalities; ++m)
    llvm::outs() << llvm::formatv(", {0} {1:F4} ({2} targets)",
                                  config.modalities[m].name, modalityLoss[m],
                                  modalityCount[m]);
  llvm::outs() << llvm::formatv(", {0:F0} tokens/s\n", tokensPerSecond);
  if (causalSpec) {
    llvm::outs() << llvm::formatv("causal routing: loss {0:F4}", causalLoss);
    for (size_t m = 0; m < modalities; ++m)
      llvm::outs() << llvm::formatv(", {0} {1:F4}", config.modalities[m].name,
                                    causalModalityLoss[m]);
    llvm::outs() << llvm::formatv(" (batch routing: {0:F4})\n", loss);
    llvm::outs() << "aux routers against batch routing (fraction of "
                    "decisions that differ):\n";
    for (const auto &[name, value] : disagreements)
      llvm::outs() << llvm::formatv(
          "  {0,-32} {1:F4}\n",
          llvm::StringRef(name).drop_front(strlen("disagreement.")), value);
  }
  return 0;
}

int runGrad() {
  llvm::Expected<LoadedArtifact> artifact = LoadedArtifact::open(gradArtifact);
  if (!artifact)
    return fail(artifact.takeError());
  const Manifest &manifest = artifact->manifest();
  ModelStats stats = computeModelStats(artifact->config());
  const std::string gradWhat =
      "the gradient of " + manifest.model + " (weights and gradients)";
  if (llvm::Error error = checkMemoryEstimate(
          stats.parameterBytes + stats.gradientBytes, gradWhat))
    return fail(std::move(error));
  if (llvm::Error error = artifact->checkDeviceMemory(
          stats.parameterBytes + stats.gradientBytes, gradWhat))
    return fail(std::move(error));
  if (gradAux && !artifact->config().auxRouters)
    return fail(runtimeError("--aux: " + manifest.model +
                             " has no auxiliary routers (aux_routers in its "
                             "description)"));
  auto entry = artifact->entryPoint(gradAux ? "grad_aux" : "grad");
  if (!entry)
    return fail(entry.takeError());
  auto [spec, gradient] = *entry;
  llvm::Expected<Weights> weights = Weights::load(manifest, gradWeights);
  if (!weights)
    return fail(weights.takeError());
  int32_t batchRows = 0;
  llvm::Expected<std::vector<int32_t>> tokens =
      readTokenFile(gradTokens, manifest, *spec, batchRows);
  if (!tokens)
    return fail(tokens.takeError());
  std::vector<float> noise;
  if (!gradNoise.empty()) {
    llvm::Expected<std::vector<float>> values = readFloatFile(gradNoise);
    if (!values)
      return fail(values.takeError());
    if (!llvm::any_of(spec->arguments, [](const BufferSpec &argument) {
          return argument.name == kGumbelNoiseArgument;
        }))
      return fail(runtimeError("--noise: the model has no router noise "
                               "(moe.gumbel with a group of several experts)"));
    noise = std::move(*values);
    // [n_layers, B*S, E] as given, into the compiled [n_layers, max, E].
    const int64_t layers = artifact->config().nLayers;
    const int64_t given = int64_t(batchRows) * manifest.seqLen;
    const int64_t bound = manifest.batchSize * manifest.seqLen;
    if (given != bound && noise.size() % (layers * given) == 0) {
      const size_t experts = noise.size() / (layers * given);
      std::vector<float> placed(layers * bound * experts, 0.0f);
      for (int64_t l = 0; l < layers; ++l)
        std::copy_n(noise.begin() + l * given * experts, given * experts,
                    placed.begin() + l * bound * experts);
      noise = std::move(placed);
    }
  }
  std::vector<std::vector<float>> results = allocateResults(*spec);
  auto buffers =
      entryBuffers(*spec, *tokens, batchRows, *weights, noise, results);
  if (!buffers)
    return fail(buffers.takeError());
  if (llvm::Error error = gradient(buffers->data()))
    return fail(std::move(error));

  SafetensorsWriter writer;
  for (size_t i = 0; i < results.size(); ++i) {
    const BufferSpec &result = spec->results[i];
    if (llvm::Error error = writer.add(result.name, result.shape, results[i]))
      return fail(std::move(error));
  }
  if (llvm::Error error = writer.write(gradOutput))
    return fail(std::move(error));
  llvm::outs() << llvm::formatv("loss {0:F6}; wrote {1} tensors to {2}\n",
                                results[0][0], results.size(), gradOutput);
  return 0;
}

int runTrain() {
  if (trainSkipNonFinite < 0)
    return fail(runtimeError("--skip-nonfinite must be at least 0"));
  if (trainSteps < 1 || trainCheckpointEvery < 1 || trainLogEvery < 1)
    return fail(runtimeError(
        "--steps, --checkpoint-every and --log-every must be at least 1"));
  if (!trainInit.empty() && trainResume)
    return fail(runtimeError("give --init or --resume, not both: --resume "
                             "continues from the run's latest checkpoint"));
  if (!trainDataPositionFrom.empty() && trainResume)
    return fail(runtimeError("give --data-position-from or --resume, not "
                             "both: --resume continues the run's own data "
                             "position"));
  TrainOptions options;
  options.artifact = trainArtifact;
  options.dataPositionFrom = trainDataPositionFrom;
  options.dataPrefix = trainData;
  options.runDirectory = trainOut;
  options.initWeights = trainInit;
  if (trainSeed.getNumOccurrences())
    options.seed = trainSeed;
  options.steps = trainSteps;
  options.resume = trainResume;
  options.checkpointEvery = trainCheckpointEvery;
  options.logEvery = trainLogEvery;
  options.skipNonFinite = trainSkipNonFinite;
  options.balanceModalities = trainBalanceModalities;
  if (trainMemoryLimit.getNumOccurrences()) {
    if (!(trainMemoryLimit > 0))
      return fail(runtimeError("--memory-limit must be a number of GB > 0"));
    options.memoryLimitBytes = int64_t(trainMemoryLimit * 1e9);
  }
  if (!(trainCommTimeout > 0))
    return fail(runtimeError("--comm-timeout must be a number of seconds > 0"));
  // Several ranks when an MPI launcher started this process; one without.
  llvm::Expected<std::unique_ptr<Communicator>> comm =
      createProcessCommunicator(std::chrono::milliseconds(
          int64_t(trainCommTimeout * 1000)));
  if (!comm)
    return fail(comm.takeError());
  if ((*comm)->size() == 1 && !trainFsdp) {
    if (options.balanceModalities)
      llvm::WithColor::warning(llvm::errs(), "momarun")
          << "--balance-modalities deals sequences among ranks; on one rank "
             "it changes nothing\n";
    if (llvm::Error error = train(options))
      return fail(std::move(error));
    return 0;
  }
  int status = 0;
  if (llvm::Error error = trainSharded(options, **comm)) {
    Communicator &ranks = **comm;
    status = 1;
    llvm::handleAllErrors(
        std::move(error),
        [&](const CollectiveStop &stop) {
          // Every rank stops here together: rank 0 says why.
          if (ranks.rank() == 0)
            llvm::WithColor::error(llvm::errs(), "momarun")
                << stop.message() << "\n";
        },
        [&](const llvm::ErrorInfoBase &other) {
          // The other ranks would wait in their next collective: stop them
          // all.
          llvm::WithColor::error(llvm::errs(), "momarun")
              << "rank " << ranks.rank() << " of " << ranks.size() << ": "
              << other.message() << "\n";
          llvm::errs().flush();
          ranks.abort(1);
        });
  }
  return status;
}

int runCkpt() {
  if (ckptArguments.size() != 2 || ckptArguments[0] != "consolidate")
    return fail(runtimeError("usage: momarun ckpt consolidate RUN/ -o "
                             "W.safetensors"));
  llvm::Expected<TrainingState> state =
      readTrainingCheckpoint(ckptArguments[1]);
  if (!state)
    return fail(state.takeError());
  if (llvm::Error error = writeSingleCheckpoint(
          ckptOutput, state->parameters, state->weights, state->firstMoments,
          state->secondMoments, *state))
    return fail(std::move(error));
  llvm::outs() << "wrote " << ckptOutput << ": " << state->parameters.size()
               << " parameters with their AdamW moments, step "
               << state->step << ", from " << state->source << "\n";
  return 0;
}

int runTrainAux() {
  if (trainAuxSteps < 1 || trainAuxLogEvery < 1)
    return fail(runtimeError("--steps and --log-every must be at least 1"));
  AuxTrainOptions options;
  options.artifact = trainAuxArtifact;
  options.weights = trainAuxWeights;
  options.dataPrefix = trainAuxData;
  options.runDirectory = trainAuxOut;
  options.steps = trainAuxSteps;
  options.logEvery = trainAuxLogEvery;
  if (llvm::Error error = trainAuxRouters(options))
    return fail(std::move(error));
  return 0;
}

/// The trailing mean over `window` points of each point.
std::vector<std::pair<double, double>>
trailingMean(const std::vector<std::pair<double, double>> &points,
             size_t window) {
  std::vector<std::pair<double, double>> smoothed;
  double sum = 0;
  for (size_t i = 0; i < points.size(); ++i) {
    sum += points[i].second;
    if (i >= window)
      sum -= points[i - window].second;
    smoothed.push_back(
        {points[i].first, sum / double(std::min(i + 1, window))});
  }
  return smoothed;
}

int runGenerate() {
  if (generateMaxNew < 1)
    return fail(runtimeError("--max-new must be at least 1"));
  if (!(generateTemperature >= 0))
    return fail(runtimeError("--temperature must be >= 0"));
  if (!(generateTopP > 0 && generateTopP <= 1))
    return fail(runtimeError("--top-p must be in (0, 1]"));
  llvm::Expected<LoadedArtifact> artifact =
      LoadedArtifact::open(generateArtifact);
  if (!artifact)
    return fail(artifact.takeError());
  const ModelConfig &config = artifact->config();
  llvm::Expected<std::vector<std::vector<int64_t>>> prompts =
      readTokenDocuments(config, generatePrompt);
  if (!prompts)
    return fail(prompts.takeError());
  GenerateOptions options;
  options.weights = generateWeights;
  options.prompts = std::move(*prompts);
  options.maxNew = generateMaxNew;
  options.temperature = generateTemperature;
  options.topP = generateTopP;
  options.seed = generateSeed;
  options.logitsPath = generateLogits;
  llvm::Expected<std::vector<GeneratedSequence>> generated =
      generate(*artifact, options);
  if (!generated)
    return fail(generated.takeError());
  std::error_code ec;
  llvm::raw_fd_ostream out(generateOut, ec);
  if (ec)
    return fail(runtimeError(generateOut + ": " + ec.message()));
  bool jsonl = llvm::StringRef(generateOut).ends_with(".jsonl");
  for (const GeneratedSequence &sequence : *generated) {
    if (jsonl) {
      llvm::json::Array ids, modalities;
      for (int64_t id : sequence.tokens) {
        ids.push_back(id);
        modalities.push_back(config.modalities[config.modalityOf(id)].name);
      }
      llvm::json::Object line{{"tokens", std::move(ids)}};
      if (generateModalityOfNext)
        line["modalities"] = std::move(modalities);
      out << llvm::formatv("{0}", llvm::json::Value(std::move(line))) << "\n";
      continue;
    }
    for (auto [i, id] : llvm::enumerate(sequence.tokens)) {
      out << (i ? " " : "") << id;
      if (generateModalityOfNext)
        out << "/" << config.modalities[config.modalityOf(id)].name;
    }
    out << "\n";
  }
  return 0;
}

int runPlot() {
  if (plotSmooth < 1)
    return fail(runtimeError("--smooth must be at least 1"));
  std::vector<RunCurves> runs;
  for (const std::string &dir : plotRuns) {
    llvm::Expected<RunCurves> curves = readRunCurves(dir);
    if (!curves)
      return fail(curves.takeError());
    runs.push_back(std::move(*curves));
  }
  // Panels: "loss" over all tokens, then each modality's loss.
  std::vector<std::string> seriesNames = {"loss"};
  for (const RunCurves &run : runs)
    for (const auto &[name, points] : run.series)
      if (!llvm::is_contained(seriesNames, name))
        seriesNames.push_back(name);
  std::vector<ChartPanel> panels;
  for (const std::string &name : seriesNames) {
    ChartPanel panel;
    panel.title = name == "loss" ? "all tokens (section-7 loss)"
                                 : name.substr(5) + " tokens";
    for (const RunCurves &run : runs) {
      auto found = run.series.find(name);
      if (found != run.series.end())
        panel.series.push_back(
            {run.label, trailingMean(found->second, size_t(plotSmooth))});
    }
    panels.push_back(std::move(panel));
  }
  std::string svg =
      renderLineCharts(panels, "training FLOPs", "loss");
  llvm::Expected<TempFile> temp = createTempBeside(plotOutput);
  if (!temp)
    return fail(temp.takeError());
  {
    llvm::raw_fd_ostream out(temp->fd, /*shouldClose=*/false);
    out << svg;
    out.flush();
    if (out.has_error()) {
      std::string message = out.error().message();
      out.clear_error();
      discardTemp(*temp);
      return fail(runtimeError(plotOutput + ": " + message));
    }
  }
  if (llvm::Error error = commitTemp(*temp))
    return fail(std::move(error));

  // The table: each run's compute and its final losses.
  llvm::outs() << llvm::formatv("{0,-24} {1,12}", "run", "FLOPs");
  for (const std::string &name : seriesNames)
    llvm::outs() << llvm::formatv(" {0,12}", name);
  llvm::outs() << "\n";
  for (const RunCurves &run : runs) {
    llvm::outs() << llvm::formatv("{0,-24} {1,12:e2}", run.label,
                                  run.totalFlops);
    for (const std::string &name : seriesNames) {
      auto found = run.series.find(name);
      if (found == run.series.end() || found->second.empty()) {
        llvm::outs() << llvm::formatv(" {0,12}", "-");
        continue;
      }
      llvm::outs() << llvm::formatv(
          " {0,12:F4}",
          trailingMean(found->second, size_t(plotSmooth)).back().second);
    }
    llvm::outs() << "\n";
  }
  llvm::outs() << llvm::formatv("final losses: means over the last {0} steps; "
                                "wrote {1}\n",
                                int64_t(plotSmooth), plotOutput);
  return 0;
}

int runUpcycle() {
  llvm::Expected<LoadedArtifact> artifact = LoadedArtifact::open(upcycleTo);
  if (!artifact)
    return fail(artifact.takeError());
  llvm::Expected<SafetensorsFile> source = SafetensorsFile::open(upcycleFrom);
  if (!source)
    return fail(source.takeError());
  UpcycleSummary summary;
  llvm::Expected<Weights> weights =
      upcycle(artifact->manifest(), *source, upcycleSeed, &summary);
  if (!weights)
    return fail(weights.takeError());
  std::map<std::string, std::string> metadata = {
      {"model", artifact->manifest().model},
      {"upcycled_from", upcycleFrom},
      {"seed", std::to_string(upcycleSeed)}};
  if (auto position = source->getMetadata("data_position"))
    metadata["upcycled_from_data_position"] = position->str();
  if (llvm::Error error = weights->save(upcycleOutput, metadata))
    return fail(std::move(error));
  llvm::outs() << llvm::formatv(
      "wrote {0} parameters of {1} to {2}: {3} copied, {4} expert tensors "
      "replicated from one FFN, {5} routers fresh\n",
      weights->size(), artifact->manifest().model, upcycleOutput,
      summary.copied.size(), summary.replicated.size(), summary.fresh.size());
  return 0;
}

int runCorpus() {
  std::string modelPath = corpusModel;
  if (llvm::sys::fs::is_directory(modelPath))
    modelPath += "/model.json";
  llvm::Expected<ModelConfig> config = loadModelConfig(modelPath);
  if (!config)
    return fail(
        runtimeError(modelPath + ": " + llvm::toString(config.takeError())));
  if (corpusSynthetic.getNumOccurrences() && corpusSynthetic < 1)
    return fail(runtimeError(llvm::formatv(
        "--synthetic {0}: the number of documents must be at least 1",
        corpusSynthetic)));
  if (corpusSynthetic.getNumOccurrences() == !corpusInput.empty())
    return fail(runtimeError("give exactly one of --synthetic N and --input"));
  // One image is built in memory: bound it (1024^2 codes, 8 MB).
  constexpr int64_t kMaxImageTokens = 1 << 20;
  if (corpusImageTokens < 1 || corpusImageTokens > kMaxImageTokens)
    return fail(runtimeError(llvm::formatv(
        "--image-tokens {0}: expected 1 to {1} codes per image",
        corpusImageTokens, kMaxImageTokens)));
  for (const char *suffix : {".bin", ".idx"})
    removeStaleTemporaries(corpusOut + suffix);
  llvm::Expected<CorpusStatistics> stats = [&] {
    if (!corpusInput.empty())
      return importTokenCorpus(*config, corpusInput, corpusOut);
    SyntheticCorpusOptions options;
    options.documents = corpusSynthetic;
    options.imageTokens = corpusImageTokens;
    options.seed = corpusSeed;
    options.textFiles.assign(corpusText.begin(), corpusText.end());
    return writeSyntheticCorpus(*config, corpusOut, options);
  }();
  if (!stats)
    return fail(stats.takeError());
  llvm::outs() << llvm::formatv("wrote {0}.bin/.idx: {1} documents, {2} "
                                "tokens ({3} text, {4} image)\n",
                                corpusOut, stats->documents, stats->tokens,
                                stats->textTokens, stats->imageTokens);
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  // Every step allocates and frees the same large buffers: keep them on the
  // heap instead of mapping and unmapping them (and returning the memory to
  // the kernel) on every step. -1 disables trimming (mallopt(3)); a finite
  // threshold, even INT_MAX, let a 90M model's step give gigabytes back and
  // fault them in again, zeroed, on the next step (13% of its time).
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, -1);
  // libLLVM registers hundreds of backend flags; --help lists momarun's own.
  cl::HideUnrelatedOptions(momarunCategory);
  cl::ParseCommandLineOptions(
      argc, argv,
      "momarun: runs MoMa models compiled by momac\n\n"
      "  momarun init ARTIFACT -o W.safetensors [--seed N]\n"
      "  momarun eval ARTIFACT --weights W.safetensors --data PREFIX\n"
      "  momarun grad ARTIFACT --weights W.safetensors --tokens T.bin --out "
      "O.safetensors\n"
      "  momarun train ARTIFACT --data PREFIX --steps N --out RUN/ [--init W] "
      "[--resume | --data-position-from CKPT]\n"
      "  momarun train-aux ARTIFACT --weights W --data PREFIX --steps N "
      "--out RUN/\n"
      "  momarun generate ARTIFACT --weights W --prompt FILE [--max-new N] "
      "[--temperature T] [--top-p P] [--seed S]\n"
      "  momarun plot RUN... -o curves.svg [--smooth N]\n"
      "  momarun upcycle --from CKPT --to ARTIFACT -o W.safetensors "
      "[--seed N]\n"
      "  momarun corpus MODEL --out PREFIX (--synthetic N | --input FILE)\n"
      "  momarun ckpt consolidate RUN/ -o W.safetensors\n"
      "  mpirun -np R momarun train ARTIFACT ...   (FSDP on R ranks, over "
      "MPI between CPUs and NCCL between GPUs; the artifact compiled with "
      "momac --fsdp)\n");
  if (initCommand)
    return runInit();
  if (evalCommand)
    return runEval();
  if (gradCommand)
    return runGrad();
  if (trainCommand)
    return runTrain();
  if (upcycleCommand)
    return runUpcycle();
  if (trainAuxCommand)
    return runTrainAux();
  if (plotCommand)
    return runPlot();
  if (generateCommand)
    return runGenerate();
  if (corpusCommand)
    return runCorpus();
  if (ckptCommand)
    return runCkpt();
  cl::PrintHelpMessage();
  return 1;
}
