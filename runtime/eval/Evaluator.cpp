//===- Evaluator.cpp - Mean losses of weights on held-out data ------------===//

#include "runtime/eval/Evaluator.h"

#include "runtime/artifact/LoadedArtifact.h"
#include "runtime/artifact/StepInputs.h"
#include "runtime/data/IndexedDataset.h"
#include "runtime/data/SequenceStream.h"
#include "runtime/model/Weights.h"

#include "llvm/Support/FormatVariadic.h"

#include <chrono>
#include <optional>

using namespace momac;

namespace {

llvm::Error evalError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message.str());
}

/// One entry point's call on the batch: its results and bound buffers.
/// Results: loss, loss.<modality>..., then (forward) aux_loss with
/// auxiliary routers, or (forward_causal) disagreement.<router>.
struct Call {
  const EntryPointSpec *spec = nullptr;
  LoadedArtifact::EntryFunction function;
  std::vector<std::vector<float>> results;
  /// Router noise, for an entry point that takes it: zeros (evaluation
  /// routing), bound for every call.
  std::vector<float> noise;
  std::vector<void *> buffers;

  llvm::Error bind(std::vector<int32_t> &tokens, int32_t &batchRows,
                   const llvm::StringMap<void *> &parameters) {
    results = allocateResults(*spec);
    auto bound =
        entryBuffers(*spec, tokens, batchRows, parameters, noise, results);
    if (!bound)
      return bound.takeError();
    buffers = std::move(*bound);
    return llvm::Error::success();
  }
};

llvm::Expected<Call> entry(const LoadedArtifact &artifact,
                           llvm::StringRef name) {
  auto found = artifact.entryPoint(name);
  if (!found)
    return found.takeError();
  Call call;
  std::tie(call.spec, call.function) = *found;
  return std::move(call);
}

/// The batches of the pass: `options.batches`, or one pass over the data;
/// more than one pass would count sequences twice.
llvm::Expected<uint64_t> batchCount(const EvalOptions &options,
                                    const SequenceStream &stream,
                                    int64_t seqLen, int64_t batch) {
  uint64_t sequencesPerPass = (stream.streamLength() - 1) / seqLen;
  uint64_t onePass = std::max<uint64_t>(1, sequencesPerPass / batch);
  if (options.batches > onePass)
    return evalError(llvm::formatv(
        "--batches {0}: {1} holds {2} batch(es) of {3} sequences; evaluating "
        "more would count sequences twice (omit --batches for one pass)",
        options.batches, options.dataPrefix, onePass, batch));
  return options.batches ? options.batches : onePass;
}

} // namespace

llvm::Expected<EvalResult> momac::evaluate(const LoadedArtifact &artifact,
                                           Weights &weights,
                                           const EvalOptions &options) {
  const Manifest &manifest = artifact.manifest();
  const ModelConfig &config = artifact.config();
  llvm::Expected<Call> forward = entry(artifact, "forward");
  if (!forward)
    return forward.takeError();
  std::optional<Call> causal;
  if (options.causal) {
    if (!config.auxRouters)
      return evalError("--causal: " + manifest.model +
                       " has no auxiliary routers to route causally with; "
                       "add \"aux_routers\": true to its description, "
                       "recompile, and train them (MODEL_SPEC section 6)");
    llvm::Expected<Call> found = entry(artifact, "forward_causal");
    if (!found)
      return found.takeError();
    causal = std::move(*found);
  }
  auto [fewest, most] = batchRange(*forward->spec, manifest);
  const int64_t batch = options.batchSize.value_or(most);
  const int64_t seqLen = manifest.seqLen;
  if (batch < fewest || batch > most)
    return evalError(llvm::formatv(
        "--batch-size {0}: this artifact takes {1} to {2} sequences per batch "
        "(train.batch_size in the model description it was compiled from)",
        batch, fewest, most));
  // On a CUDA artifact's GPU for every batch.
  if (llvm::Error error = weights.keepOnDevice(artifact))
    return std::move(error);
  llvm::Expected<IndexedDataset> dataset =
      IndexedDataset::open(options.dataPrefix);
  if (!dataset)
    return dataset.takeError();
  SequenceStreamOptions streamOptions;
  streamOptions.vocabSize = manifest.vocabSize;
  llvm::Expected<SequenceStream> stream =
      SequenceStream::create(*dataset, seqLen, streamOptions);
  if (!stream)
    return stream.takeError();
  llvm::Expected<uint64_t> batches =
      batchCount(options, *stream, seqLen, batch);
  if (!batches)
    return batches.takeError();

  // The compiled [max, S+1] buffer; its first `batch` rows are the batch.
  std::vector<int32_t> tokens(most * (seqLen + 1));
  llvm::MutableArrayRef<int32_t> batchTokens(tokens.data(),
                                             batch * (seqLen + 1));
  int32_t batchRows = int32_t(batch);
  llvm::StringMap<void *> parameters = weights.byName();
  for (Call *call : {&*forward, causal ? &*causal : nullptr})
    if (call)
      if (llvm::Error error = call->bind(tokens, batchRows, parameters))
        return std::move(error);

  const size_t modalities = config.modalities.size();
  const size_t firstDisagreement = 1 + modalities;
  EvalResult result;
  result.batches = *batches;
  result.batchSize = batch;
  std::vector<double> modalitySum(modalities, 0), causalModalitySum(
                                                      modalities, 0);
  result.modalityTargets.assign(modalities, 0);
  std::vector<double> disagreementSum(
      causal ? causal->spec->results.size() - firstDisagreement : 0, 0);
  double lossSum = 0, causalLossSum = 0;
  auto start = std::chrono::steady_clock::now();
  for (uint64_t b = 0; b < result.batches; ++b) {
    if (llvm::Error error = stream->next(batch, batchTokens))
      return std::move(error);
    if (llvm::Error error = forward->function(forward->buffers.data()))
      return std::move(error);
    lossSum += forward->results[0][0];
    std::vector<uint64_t> counts = config.countTargetsByModality(batchTokens);
    for (size_t m = 0; m < modalities; ++m) {
      modalitySum[m] += double(forward->results[1 + m][0]) * double(counts[m]);
      result.modalityTargets[m] += counts[m];
    }
    if (!causal)
      continue;
    if (llvm::Error error = causal->function(causal->buffers.data()))
      return std::move(error);
    causalLossSum += causal->results[0][0];
    for (size_t m = 0; m < modalities; ++m)
      causalModalitySum[m] +=
          double(causal->results[1 + m][0]) * double(counts[m]);
    for (size_t r = 0; r < disagreementSum.size(); ++r)
      disagreementSum[r] += causal->results[firstDisagreement + r][0];
  }
  result.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();

  const double count = double(result.batches);
  result.loss = lossSum / count;
  result.causalLoss = causalLossSum / count;
  result.modalityLoss.assign(modalities, 0);
  result.causalModalityLoss.assign(modalities, 0);
  for (size_t m = 0; m < modalities; ++m)
    if (uint64_t targets = result.modalityTargets[m]) {
      result.modalityLoss[m] = modalitySum[m] / double(targets);
      result.causalModalityLoss[m] = causalModalitySum[m] / double(targets);
    }
  // Each router's disagreement, averaged over the batches.
  for (size_t r = 0; r < disagreementSum.size(); ++r)
    result.disagreements.push_back(
        {causal->spec->results[firstDisagreement + r].name,
         disagreementSum[r] / count});
  return std::move(result);
}
