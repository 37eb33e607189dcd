//===- ModelCommands.cpp - init, upcycle, corpus -------------------------===//

#include "tools/momarun/Commands.h"

#include "lib/config/ModelConfig.h"
#include "lib/config/ModelStats.h"
#include "lib/safetensors/Safetensors.h"
#include "lib/support/AtomicFile.h"
#include "runtime/artifact/LoadedArtifact.h"
#include "runtime/data/Corpus.h"
#include "runtime/model/Upcycle.h"
#include "runtime/model/Weights.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

using namespace momac;
using namespace momac::momarun;
namespace cl = llvm::cl;

cl::SubCommand momac::momarun::initCommand("init", "Write randomly initialized weights "
                                   "(MODEL_SPEC section 2) for an artifact");

cl::SubCommand momac::momarun::upcycleCommand(
    "upcycle", "Build the weights of a model with more experts from a "
               "checkpoint of one with fewer (MODEL_SPEC section 7)");


cl::SubCommand momac::momarun::corpusCommand("corpus",
                             "Write a Megatron indexed dataset for a model: "
                             "synthetic mixed-modal data, or token ids from "
                             "text/JSONL");


namespace {

cl::opt<std::string> initArtifact(cl::Positional, cl::Required,
                                  cl::desc("<artifact directory>"),
                                  cl::sub(initCommand),
                                  cl::cat(momarunCategory()));
cl::opt<std::string> initOutput("o", cl::Required,
                                cl::desc("Weights to write (.safetensors)"),
                                cl::value_desc("file"), cl::sub(initCommand),
                                cl::cat(momarunCategory()));
cl::opt<uint64_t> initSeed("seed", cl::init(0),
                           cl::desc("Seed of momarun's generator (default 0)"),
                           cl::sub(initCommand), cl::cat(momarunCategory()));

cl::opt<std::string> upcycleFrom(
    "from", cl::Required,
    cl::desc("Stage-1 checkpoint or weights (.safetensors) of a model with "
             "one expert per group (or dense)"),
    cl::value_desc("file"), cl::sub(upcycleCommand), cl::cat(momarunCategory()));
cl::opt<std::string> upcycleTo(
    "to", cl::Required,
    cl::desc("Artifact of the model to build (its experts per group a "
             "multiple of the checkpoint's)"),
    cl::value_desc("artifact"), cl::sub(upcycleCommand),
    cl::cat(momarunCategory()));
cl::opt<std::string> upcycleOutput("o", cl::Required,
                                   cl::desc("Weights to write (.safetensors)"),
                                   cl::value_desc("file"),
                                   cl::sub(upcycleCommand),
                                   cl::cat(momarunCategory()));
cl::opt<uint64_t> upcycleSeed(
    "seed", cl::init(0),
    cl::desc("Seed of the fresh routers; they equal `momarun init --seed` "
             "of the target (default 0)"),
    cl::sub(upcycleCommand), cl::cat(momarunCategory()));

cl::opt<std::string> corpusModel(cl::Positional, cl::Required,
                                 cl::desc("<model.json or artifact directory>"),
                                 cl::sub(corpusCommand),
                                 cl::cat(momarunCategory()));
cl::opt<std::string> corpusOut("out", cl::Required,
                               cl::desc("Dataset prefix to write (PREFIX.bin, "
                                        "PREFIX.idx)"),
                               cl::value_desc("prefix"), cl::sub(corpusCommand),
                               cl::cat(momarunCategory()));
cl::opt<int64_t> corpusSynthetic(
    "synthetic", cl::init(0),
    cl::desc("Generate this many synthetic documents, at least 1: "
             "byte-level text, and images of correlated codes between "
             "begin/end sentinels"),
    cl::sub(corpusCommand), cl::cat(momarunCategory()));
cl::opt<std::string> corpusInput(
    "input",
    cl::desc("Token ids to convert: one document per line, ids separated by "
             "spaces, or JSONL (.jsonl) with a list or {\"tokens\": [...]}"),
    cl::value_desc("file"), cl::sub(corpusCommand), cl::cat(momarunCategory()));
cl::opt<int64_t> corpusImageTokens(
    "image-tokens", cl::init(64),
    cl::desc("Codes per synthetic image, 1 to 1048576 (a square grid; "
             "Chameleon uses 1024)"),
    cl::sub(corpusCommand), cl::cat(momarunCategory()));
cl::opt<uint64_t> corpusSeed("seed", cl::init(0),
                             cl::desc("Seed of the synthetic corpus"),
                             cl::sub(corpusCommand), cl::cat(momarunCategory()));
cl::list<std::string>
    corpusText("text",
               cl::desc("Files whose bytes make the synthetic text (default: "
                        "/usr/share/common-licenses)"),
               cl::value_desc("file"), cl::sub(corpusCommand),
               cl::cat(momarunCategory()));

} // namespace

int momac::momarun::runInit() {
  if (llvm::Error error =
          refuseInputsAsOutputs({initOutput}, artifactFiles(initArtifact)))
    return fail(std::move(error));
  llvm::Expected<LoadedArtifact> artifact = LoadedArtifact::open(initArtifact);
  if (!artifact)
    return fail(artifact.takeError());
  // The same estimate train makes (its weights alone here).
  if (llvm::Error error = checkMemoryEstimate(
          computeModelStats(artifact->config()).parameterBytes,
          "initializing " + artifact->manifest().model + " (its weights)"))
    return fail(std::move(error));
  Weights weights = Weights::initialize(artifact->manifest(), initSeed);
  if (llvm::Error error =
          weights.save(initOutput, {{"seed", std::to_string(initSeed)},
                                    {"model", artifact->manifest().model}}))
    return fail(std::move(error));
  llvm::outs() << "wrote " << weights.size() << " parameters of "
               << artifact->manifest().model << " to " << initOutput << "\n";
  return 0;
}

int momac::momarun::runUpcycle() {
  std::vector<std::string> inputs = artifactFiles(upcycleTo);
  inputs.push_back(upcycleFrom);
  if (llvm::Error error = refuseInputsAsOutputs({upcycleOutput}, inputs))
    return fail(std::move(error));
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
  if (llvm::Error error = weights->checkFinite(upcycleFrom))
    return fail(std::move(error));
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

int momac::momarun::runCorpus() {
  std::string modelPath = corpusModel;
  if (llvm::sys::fs::is_directory(modelPath))
    modelPath += "/model.json";
  llvm::Expected<ModelConfig> config = loadModelConfig(modelPath);
  if (!config)
    return fail(
        usageError(modelPath + ": " + llvm::toString(config.takeError())));
  if (corpusSynthetic.getNumOccurrences() && corpusSynthetic < 1)
    return fail(usageError(llvm::formatv(
        "--synthetic {0}: the number of documents must be at least 1",
        corpusSynthetic)));
  if (corpusSynthetic.getNumOccurrences() == !corpusInput.empty())
    return fail(usageError("give exactly one of --synthetic N and --input"));
  // One image is built in memory: bound it (1024^2 codes, 8 MB).
  constexpr int64_t kMaxImageTokens = 1 << 20;
  if (corpusImageTokens < 1 || corpusImageTokens > kMaxImageTokens)
    return fail(usageError(llvm::formatv(
        "--image-tokens {0}: expected 1 to {1} codes per image",
        corpusImageTokens, kMaxImageTokens)));
  // Bounded before anything is written: the documents a disk can take.
  constexpr int64_t kMaxDocuments = 1'000'000'000;
  if (corpusSynthetic > kMaxDocuments)
    return fail(usageError(llvm::formatv(
        "--synthetic {0}: at most {1} documents", corpusSynthetic,
        kMaxDocuments)));
  std::vector<std::string> inputs = {modelPath, corpusInput};
  inputs.insert(inputs.end(), corpusText.begin(), corpusText.end());
  if (llvm::Error error = refuseInputsAsOutputs(
          {corpusOut + ".bin", corpusOut + ".idx"}, inputs))
    return fail(std::move(error));
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

