//===- EvalCommands.cpp - eval, grad, generate ---------------------------===//

#include "tools/momarun/Commands.h"

#include "lib/config/ModelStats.h"
#include "lib/safetensors/Safetensors.h"
#include "lib/support/AtomicFile.h"
#include "runtime/artifact/LoadedArtifact.h"
#include "runtime/artifact/StepInputs.h"
#include "runtime/data/Corpus.h"
#include "runtime/eval/Evaluator.h"
#include "runtime/generate/Generator.h"
#include "runtime/model/Weights.h"
#include "runtime/train/RunRecord.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

#include <cstring>

using namespace momac;
using namespace momac::momarun;
namespace cl = llvm::cl;

cl::SubCommand momac::momarun::evalCommand("eval", "Mean loss, overall and per modality, of "
                                   "weights on held-out data");


cl::SubCommand momac::momarun::gradCommand("grad",
                           "Loss, per-modality losses and the gradient of "
                           "every parameter for one batch (MODEL_SPEC "
                           "section 8)");


cl::SubCommand momac::momarun::generateCommand(
    "generate", "Continue prompts with causal routing by the auxiliary "
                "routers and a key/value cache (MODEL_SPEC section 6): the "
                "prompts in one call, then one new token per prompt and call");


namespace {

cl::opt<std::string> evalArtifact(cl::Positional, cl::Required,
                                  cl::desc("<artifact directory>"),
                                  cl::sub(evalCommand),
                                  cl::cat(momarunCategory()));
cl::opt<std::string> evalWeights("weights", cl::Required,
                                 cl::desc("Weights (.safetensors)"),
                                 cl::value_desc("file"), cl::sub(evalCommand),
                                 cl::cat(momarunCategory()));
cl::opt<std::string> evalData("data", cl::Required,
                              cl::desc("Megatron indexed dataset prefix "
                                       "(PREFIX.bin, PREFIX.idx)"),
                              cl::value_desc("prefix"), cl::sub(evalCommand),
                              cl::cat(momarunCategory()));
cl::opt<unsigned> evalBatchSize(
    "batch-size", cl::init(0),
    cl::desc("Sequences per batch, 1 to the train.batch_size the artifact "
             "was compiled for (default: that batch size)"),
    cl::sub(evalCommand), cl::cat(momarunCategory()));
cl::opt<unsigned> evalBatches(
    "batches", cl::init(0),
    cl::desc("Batches to evaluate, at least 1 (default: one pass over the "
             "data, at least one batch)"),
    cl::sub(evalCommand), cl::cat(momarunCategory()));
cl::opt<bool> evalJson("json", cl::desc("Print the result as one JSON object"),
                       cl::sub(evalCommand), cl::cat(momarunCategory()));
cl::opt<bool> evalCausal(
    "causal",
    cl::desc("Also evaluate with causal routing (MODEL_SPEC section 6: a "
             "token goes to an expert, or through a MoD block, iff its "
             "auxiliary router's score is above 0.5), and report per router "
             "how often that disagrees with the batch routing (models with "
             "aux_routers)"),
    cl::sub(evalCommand), cl::cat(momarunCategory()));

cl::opt<std::string> gradArtifact(cl::Positional, cl::Required,
                                  cl::desc("<artifact directory>"),
                                  cl::sub(gradCommand),
                                  cl::cat(momarunCategory()));
cl::opt<std::string> gradWeights("weights", cl::Required,
                                 cl::desc("Weights (.safetensors)"),
                                 cl::value_desc("file"), cl::sub(gradCommand),
                                 cl::cat(momarunCategory()));
cl::opt<std::string>
    gradTokens("tokens", cl::Required,
               cl::desc("Token ids: raw little-endian int32, [B, S+1], B from 1 "
                        "to the train.batch_size the artifact was compiled "
                        "for"),
               cl::value_desc("file"), cl::sub(gradCommand),
               cl::cat(momarunCategory()));
cl::opt<std::string> gradOutput("out", cl::Required,
                                cl::desc("Where to write loss, loss.<modality> "
                                         "and grad.<name> (.safetensors)"),
                                cl::value_desc("file"), cl::sub(gradCommand),
                                cl::cat(momarunCategory()));
cl::opt<std::string> gradNoise(
    "noise",
    cl::desc("Router logit noise to add, raw little-endian float32 "
             "[n_layers, B*S, max experts] (models with moe.gumbel; for "
             "testing). Default: none, the evaluation routing of the "
             "numerical contract"),
    cl::value_desc("file"), cl::sub(gradCommand), cl::cat(momarunCategory()));

cl::opt<bool> gradAux(
    "aux",
    cl::desc("The auxiliary routers' objective instead (MODEL_SPEC section "
             "6, what train-aux trains): writes aux_loss, bce.<router>, "
             "confusion.<router> ([true positives, predicted positives, "
             "chosen, decisions]) and grad.<aux parameter>"),
    cl::sub(gradCommand), cl::cat(momarunCategory()));

cl::opt<std::string> generateArtifact(cl::Positional, cl::Required,
                                      cl::desc("<artifact directory>"),
                                      cl::sub(generateCommand),
                                      cl::cat(momarunCategory()));
cl::opt<std::string> generateWeights("weights", cl::Required,
                                     cl::desc("Weights (.safetensors)"),
                                     cl::value_desc("file"),
                                     cl::sub(generateCommand),
                                     cl::cat(momarunCategory()));
cl::opt<std::string> generatePrompt(
    "prompt", cl::Required,
    cl::desc("Prompts, one per line: token ids separated by spaces, or JSONL "
             "(.jsonl: a list or {\"tokens\": [...]}); up to train.batch_size "
             "prompts decode together"),
    cl::value_desc("file"), cl::sub(generateCommand), cl::cat(momarunCategory()));
cl::opt<int64_t> generateMaxNew(
    "max-new", cl::init(32),
    cl::desc("New tokens per prompt, at least 1; prompt + new must fit in "
             "seq_len (default 32)"),
    cl::value_desc("N"), cl::sub(generateCommand), cl::cat(momarunCategory()));
cl::opt<double> generateTemperature(
    "temperature", cl::init(1.0),
    cl::desc("Softmax temperature, >= 0; 0 is greedy (default 1)"),
    cl::sub(generateCommand), cl::cat(momarunCategory()));
cl::opt<double> generateTopP(
    "top-p", cl::init(1.0),
    cl::desc("Nucleus sampling: keep the most likely tokens up to this "
             "probability mass, in (0, 1] (default 1: all)"),
    cl::sub(generateCommand), cl::cat(momarunCategory()));
cl::opt<uint64_t> generateSeed("seed", cl::init(0),
                               cl::desc("Seed of the sampling (default 0)"),
                               cl::sub(generateCommand),
                               cl::cat(momarunCategory()));
cl::opt<std::string> generateOut(
    "out", cl::init("-"),
    cl::desc("Where to write the new tokens: one line of ids per prompt, or "
             "JSONL ({\"tokens\": [...]}) for a .jsonl name (default: "
             "stdout)"),
    cl::value_desc("file"), cl::sub(generateCommand), cl::cat(momarunCategory()));
cl::opt<bool> generateModalityOfNext(
    "modality-of-next",
    cl::desc("Also say which modality each new token belongs to (id/modality "
             "in text, \"modalities\" in JSONL)"),
    cl::sub(generateCommand), cl::cat(momarunCategory()));
cl::opt<std::string> generateLogits(
    "logits",
    cl::desc("Write the first prompt's logits that predict each new token, "
             "raw float32 [max-new, vocab]; with --prompt-by-token also those "
             "of every prompt position before (for testing)"),
    cl::value_desc("file"), cl::sub(generateCommand), cl::cat(momarunCategory()));
cl::opt<bool> generatePromptByToken(
    "prompt-by-token",
    cl::desc("Feed the prompts one position per call instead of in one call "
             "(the same tokens and logits, slower; for comparison)"),
    cl::sub(generateCommand), cl::cat(momarunCategory()));

/// The result as one JSON object (--json).
void printEvalJson(const ModelConfig &config, const EvalResult &result) {
  llvm::json::Object out{
      {"loss", jsonNumber(result.loss)},
      {"batches", int64_t(result.batches)},
      {"sequences", int64_t(result.batches * result.batchSize)},
      {"tokens_per_s",
       jsonNumber(double(result.batches * result.batchSize * config.seqLen) /
                  result.seconds)}};
  for (auto [m, modality] : llvm::enumerate(config.modalities)) {
    out["loss." + modality.name] = jsonNumber(result.modalityLoss[m]);
    out["targets." + modality.name] = int64_t(result.modalityTargets[m]);
  }
  if (evalCausal) {
    out["causal.loss"] = jsonNumber(result.causalLoss);
    for (auto [m, modality] : llvm::enumerate(config.modalities))
      out["causal.loss." + modality.name] =
          jsonNumber(result.causalModalityLoss[m]);
    for (const auto &[name, value] : result.disagreements)
      out[name] = jsonNumber(value);
  }
  llvm::outs() << llvm::formatv("{0}", llvm::json::Value(std::move(out)))
               << "\n";
}

void printEvalText(const ModelConfig &config, const EvalResult &result) {
  llvm::outs() << llvm::formatv(
      "eval {0}: {1} batches x {2} sequences of {3} tokens, loss {4:F4}",
      config.name, result.batches, result.batchSize, config.seqLen,
      result.loss);
  for (auto [m, modality] : llvm::enumerate(config.modalities))
    llvm::outs() << llvm::formatv(", {0} {1:F4} ({2} targets)", modality.name,
                                  result.modalityLoss[m],
                                  result.modalityTargets[m]);
  llvm::outs() << llvm::formatv(
      ", {0:F0} tokens/s\n",
      double(result.batches * result.batchSize * config.seqLen) /
          result.seconds);
  if (!evalCausal)
    return;
  llvm::outs() << llvm::formatv("causal routing: loss {0:F4}",
                                result.causalLoss);
  for (auto [m, modality] : llvm::enumerate(config.modalities))
    llvm::outs() << llvm::formatv(", {0} {1:F4}", modality.name,
                                  result.causalModalityLoss[m]);
  llvm::outs() << llvm::formatv(" (batch routing: {0:F4})\n", result.loss);
  llvm::outs() << "aux routers against batch routing (fraction of "
                  "decisions that differ):\n";
  for (const auto &[name, value] : result.disagreements)
    llvm::outs() << llvm::formatv(
        "  {0,-32} {1:F4}\n",
        llvm::StringRef(name).drop_front(strlen("disagreement.")), value);
}

/// The GEMM libraries the command's steps run, on stderr (stdout carries
/// its results) once its inputs are checked: a refused command prints one
/// line.
void announceGemms(const LoadedArtifact &artifact) {
  llvm::errs() << "momarun: " << artifact.gemmLibraries() << "\n";
}

/// Prompt and decoding speed, on stderr.
void printGenerationSpeed(const Generation &run) {
  auto rate = [](int64_t tokens, double seconds) {
    return seconds > 0 ? double(tokens) / seconds : 0.0;
  };
  llvm::errs() << llvm::formatv(
      "momarun: prompts {0} tokens in {1:F3} s ({2:F0} tok/s, {3}); decoded "
      "{4} tokens in {5:F3} s ({6:F0} tok/s)\n",
      run.promptTokens, run.promptSeconds,
      rate(run.promptTokens, run.promptSeconds),
      run.batchedPrompt ? "one call" : "one position per call",
      run.decodedTokens, run.decodeSeconds,
      rate(run.decodedTokens, run.decodeSeconds));
}

} // namespace

int momac::momarun::runEval() {
  if (evalBatches.getNumOccurrences() && evalBatches == 0)
    return fail(usageError("--batches 0: evaluate at least 1 batch (omit "
                           "--batches for one pass over the data)"));
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
  if (llvm::Error error = artifact->device().checkMemory(weightBytes, evalWhat))
    return fail(std::move(error));
  llvm::Expected<Weights> weights = Weights::load(manifest, evalWeights);
  if (!weights)
    return fail(weights.takeError());
  EvalOptions options;
  options.dataPrefix = evalData;
  if (evalBatchSize.getNumOccurrences())
    options.batchSize = evalBatchSize;
  options.batches = evalBatches;
  options.causal = evalCausal;
  announceGemms(*artifact);
  llvm::Expected<EvalResult> result = evaluate(*artifact, *weights, options);
  if (!result)
    return fail(result.takeError());
  if (evalJson)
    printEvalJson(config, *result);
  else
    printEvalText(config, *result);
  return 0;
}

int momac::momarun::runGrad() {
  std::vector<std::string> inputs = artifactFiles(gradArtifact);
  inputs.insert(inputs.end(), {gradWeights, gradTokens, gradNoise});
  if (llvm::Error error = refuseInputsAsOutputs({gradOutput}, inputs))
    return fail(std::move(error));
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
  if (llvm::Error error = artifact->device().checkMemory(
          stats.parameterBytes + stats.gradientBytes, gradWhat))
    return fail(std::move(error));
  if (gradAux && !artifact->config().auxRouters)
    return fail(usageError("--aux: " + manifest.model +
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
    llvm::Expected<std::vector<float>> read =
        readRouterNoise(gradNoise, *spec, manifest,
                        artifact->config().nLayers, batchRows);
    if (!read)
      return fail(read.takeError());
    noise = std::move(*read);
  }
  std::vector<std::vector<float>> results = allocateResults(*spec);
  auto buffers = entryBuffers(*spec, *tokens, batchRows, weights->byName(),
                              noise, results);
  if (!buffers)
    return fail(buffers.takeError());
  announceGemms(*artifact);
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

int momac::momarun::runGenerate() {
  if (generateMaxNew < 1)
    return fail(usageError("--max-new must be at least 1"));
  if (!(generateTemperature >= 0))
    return fail(usageError("--temperature must be >= 0"));
  if (!(generateTopP > 0 && generateTopP <= 1))
    return fail(usageError("--top-p must be in (0, 1]"));
  std::vector<std::string> inputs = artifactFiles(generateArtifact);
  inputs.insert(inputs.end(), {generateWeights, generatePrompt});
  std::vector<std::string> outputs = {generateLogits};
  if (generateOut != "-")
    outputs.push_back(generateOut);
  if (llvm::Error error = refuseInputsAsOutputs(outputs, inputs))
    return fail(std::move(error));
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
  options.promptByToken = generatePromptByToken;
  if (llvm::Error error = checkGenerateRequest(*artifact, options))
    return fail(std::move(error));
  announceGemms(*artifact);
  llvm::Expected<Generation> generated = generate(*artifact, options);
  if (!generated)
    return fail(generated.takeError());
  printGenerationSpeed(*generated);
  std::string text;
  llvm::raw_string_ostream out(text);
  bool jsonl = llvm::StringRef(generateOut).ends_with(".jsonl");
  for (const GeneratedSequence &sequence : generated->sequences) {
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
  out.flush();
  if (generateOut == "-") {
    llvm::outs() << text;
    return 0;
  }
  // Replaced whole, as every file momarun writes.
  if (llvm::Error error = writeFileAtomically(generateOut, text))
    return fail(std::move(error));
  return 0;
}

