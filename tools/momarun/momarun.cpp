//===- momarun.cpp - Runs compiled MoMa artifacts -------------------------===//
//
//   momarun init ARTIFACT -o W.safetensors [--seed N]
//   momarun eval ARTIFACT --weights W.safetensors --data PREFIX [--batches N]
//
// ARTIFACT is a directory written by `momac MODEL.json -o ARTIFACT`. momarun
// dlopens its model.so and calls the compiled entry points; it compiles
// nothing and holds no model math of its own.
//
//===----------------------------------------------------------------------===//

#include "runtime/artifact/LoadedArtifact.h"
#include "runtime/data/IndexedDataset.h"
#include "runtime/data/SequenceStream.h"
#include "runtime/model/Weights.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>

using namespace momac;
namespace cl = llvm::cl;

namespace {

cl::OptionCategory momarunCategory("momarun options");

cl::SubCommand initCommand("init", "Write randomly initialized weights "
                                   "(MODEL_SPEC section 2) for an artifact");
cl::SubCommand evalCommand("eval", "Mean loss, overall and per modality, of "
                                   "weights on held-out data");

cl::opt<std::string> initArtifact(cl::Positional, cl::Required,
                                  cl::desc("<artifact directory>"),
                                  cl::sub(initCommand), cl::cat(momarunCategory));
cl::opt<std::string> initOutput("o", cl::Required,
                                cl::desc("Weights to write (.safetensors)"),
                                cl::value_desc("file"), cl::sub(initCommand), cl::cat(momarunCategory));
cl::opt<uint64_t> initSeed("seed", cl::init(0),
                           cl::desc("Seed of momarun's generator (default 0)"),
                           cl::sub(initCommand), cl::cat(momarunCategory));

cl::opt<std::string> evalArtifact(cl::Positional, cl::Required,
                                  cl::desc("<artifact directory>"),
                                  cl::sub(evalCommand), cl::cat(momarunCategory));
cl::opt<std::string> evalWeights("weights", cl::Required,
                                 cl::desc("Weights (.safetensors)"),
                                 cl::value_desc("file"), cl::sub(evalCommand), cl::cat(momarunCategory));
cl::opt<std::string> evalData("data", cl::Required,
                              cl::desc("Megatron indexed dataset prefix "
                                       "(PREFIX.bin, PREFIX.idx)"),
                              cl::value_desc("prefix"), cl::sub(evalCommand), cl::cat(momarunCategory));
cl::opt<unsigned> evalBatches(
    "batches", cl::init(0),
    cl::desc("Batches to evaluate (default: one pass over the data, at least "
             "one batch)"),
    cl::sub(evalCommand), cl::cat(momarunCategory));
cl::opt<bool> evalJson("json", cl::desc("Print the result as one JSON object"),
                       cl::sub(evalCommand), cl::cat(momarunCategory));

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
  auto entry = artifact->entryPoint("forward");
  if (!entry)
    return fail(entry.takeError());
  auto [spec, forward] = *entry;

  llvm::Expected<Weights> weights = Weights::load(manifest, evalWeights);
  if (!weights)
    return fail(weights.takeError());
  llvm::Expected<IndexedDataset> dataset = IndexedDataset::open(evalData);
  if (!dataset)
    return fail(dataset.takeError());
  SequenceStreamOptions streamOptions;
  streamOptions.vocabSize = manifest.vocabSize;
  llvm::Expected<SequenceStream> stream =
      SequenceStream::create(*dataset, manifest.seqLen, streamOptions);
  if (!stream)
    return fail(stream.takeError());

  const int64_t batch = manifest.batchSize, seqLen = manifest.seqLen;
  uint64_t sequencesPerPass = (stream->streamLength() - 1) / seqLen;
  uint64_t batches = evalBatches
                         ? evalBatches
                         : std::max<uint64_t>(1, sequencesPerPass / batch);

  // Buffers in entry-point order: tokens, parameters, then the results
  // (loss, loss.<modality>..., and aux_loss with auxiliary routers).
  std::vector<int32_t> tokens(batch * (seqLen + 1));
  std::vector<void *> buffers = {tokens.data()};
  for (size_t i = 0; i < weights->size(); ++i)
    buffers.push_back((*weights)[i].data());
  std::vector<float> results(spec->results.size());
  for (float &result : results)
    buffers.push_back(&result);
  if (buffers.size() != spec->arguments.size() + spec->results.size())
    return fail(llvm::createStringError(
        llvm::inconvertibleErrorCode(),
        "%s: the forward entry point does not match the manifest's parameters",
        evalArtifact.c_str()));

  // Per-modality losses are pooled over every target of the modality.
  size_t modalities = config.modalities.size();
  double lossSum = 0;
  std::vector<double> modalitySum(modalities, 0);
  std::vector<uint64_t> modalityCount(modalities, 0);
  auto start = std::chrono::steady_clock::now();
  for (uint64_t b = 0; b < batches; ++b) {
    if (llvm::Error error = stream->next(batch, tokens))
      return fail(std::move(error));
    forward(buffers.data());
    lossSum += results[0];
    std::vector<uint64_t> counts(modalities, 0);
    for (int64_t row = 0; row < batch; ++row)
      for (int64_t s = 1; s <= seqLen; ++s)
        ++counts[config.modalityOf(tokens[row * (seqLen + 1) + s])];
    for (size_t m = 0; m < modalities; ++m) {
      modalitySum[m] += double(results[1 + m]) * double(counts[m]);
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

  if (evalJson) {
    llvm::json::Object out{{"loss", loss},
                           {"batches", int64_t(batches)},
                           {"sequences", int64_t(batches * batch)},
                           {"tokens_per_s", tokensPerSecond}};
    for (size_t m = 0; m < modalities; ++m) {
      out["loss." + config.modalities[m].name] = modalityLoss[m];
      out["targets." + config.modalities[m].name] = int64_t(modalityCount[m]);
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
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  // libLLVM registers hundreds of backend flags; --help lists momarun's own.
  cl::HideUnrelatedOptions(momarunCategory);
  cl::ParseCommandLineOptions(
      argc, argv,
      "momarun: runs MoMa models compiled by momac\n\n"
      "  momarun init ARTIFACT -o W.safetensors [--seed N]\n"
      "  momarun eval ARTIFACT --weights W.safetensors --data PREFIX\n");
  if (initCommand)
    return runInit();
  if (evalCommand)
    return runEval();
  cl::PrintHelpMessage();
  return 1;
}
