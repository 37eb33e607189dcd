//===- AuxRouterTrainer.cpp - Training the auxiliary routers --------------===//
//
// The aux-router TrainStep: @grad_aux on one train.batch_size batch (BCE of
// each auxiliary router against the batch top-k choices of the frozen
// model), then @optimizer_step_aux (AdamW on the aux routers only). Its
// checkpoint is RUN/weights.safetensors, the model with the routers trained
// so far. The loop (TrainLoop.h) is the one every trainer runs.
//
//===----------------------------------------------------------------------===//

#include "runtime/train/AuxRouterTrainer.h"

#include "runtime/artifact/LoadedArtifact.h"
#include "runtime/data/IndexedDataset.h"
#include "runtime/data/SequenceStream.h"
#include "runtime/model/Weights.h"
#include "runtime/train/RunLock.h"
#include "runtime/train/TrainLoop.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <chrono>
#include <cmath>

using namespace momac;

namespace {

llvm::Error auxError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 message.str());
}

/// A ratio, or 0 when nothing was counted.
double ratio(double part, double whole) { return whole > 0 ? part / whole : 0; }

class AuxRouterStep : public TrainStep {
public:
  AuxRouterStep(const AuxTrainOptions &options, const LoadedArtifact &artifact,
                Weights weights, PackedDataset data,
                LoadedArtifact::EntryFunction grad,
                LoadedArtifact::EntryFunction update)
      : options(options), artifact(artifact), manifest(artifact.manifest()),
        config(artifact.config()), weights(std::move(weights)),
        data(std::move(data)), gradFunction(std::move(grad)),
        updateFunction(std::move(update)) {}

  /// Binds both entry points' buffers; keeps the frozen model on the
  /// device.
  llvm::Error bind(const EntryPointSpec &gradSpec,
                   const EntryPointSpec &updateSpec);
  llvm::Expected<StepOutcome> run(int64_t step, double lr) override;
  llvm::Error checkpoint(int64_t completed) override {
    return weights.save(weightsPath(), {{"model", manifest.model},
                                        {"aux_steps", std::to_string(completed)},
                                        {"trained_from", options.weights}});
  }
  /// Each step reads the next batch; a stopped run is not resumed.
  void rewind() override {}
  int64_t tokensPerStep() const override {
    return manifest.batchSize * manifest.seqLen;
  }
  std::string checkpointName() const override { return weightsPath(); }
  llvm::StringRef lossName() const override { return "aux_loss"; }
  size_t routerCount() const { return routers.size(); }
  std::string weightsPath() const {
    return options.runDirectory + "/weights.safetensors";
  }

private:
  /// The routers' metrics and their mean accuracy.
  double routerMetrics(llvm::json::Object &metrics) const;

  /// A router in the order the grad entry point reports them.
  struct Router {
    std::string name;
    const float *bce, *confusion;
  };

  const AuxTrainOptions &options;
  const LoadedArtifact &artifact;
  const Manifest &manifest;
  const ModelConfig &config;
  Weights weights;
  PackedDataset data;
  LoadedArtifact::EntryFunction gradFunction, updateFunction;
  std::vector<int32_t> tokens;
  int32_t batchRows = 0;
  std::vector<std::vector<float>> outputs, firstMoments, secondMoments;
  std::vector<Router> routers;
  /// The gradients the optimizer reads, checked before each update.
  std::vector<std::pair<std::string, const std::vector<float> *>> gradients;
  std::array<float, 3> schedule{};
  std::vector<float> gradNorm = {0.0f};
  std::vector<void *> gradBuffers, updateBuffers;
};

llvm::Error AuxRouterStep::bind(const EntryPointSpec &gradSpec,
                                const EntryPointSpec &updateSpec) {
  // The grad entry point reads the whole model and writes aux_loss,
  // bce.<router>, confusion.<router> and the aux routers' gradients, which
  // the optimizer step reads with their moments.
  tokens.assign(manifest.batchSize * (manifest.seqLen + 1), 0);
  batchRows = int32_t(manifest.batchSize);
  llvm::StringMap<void *> gradArguments, gradResults, stepArguments,
      stepResults;
  gradArguments["tokens"] = tokens.data();
  if (takesBatchRows(gradSpec))
    gradArguments[kBatchRowsArgument] = &batchRows;
  outputs = allocateResults(gradSpec, gradResults);
  firstMoments.reserve(weights.size());
  secondMoments.reserve(weights.size());
  for (size_t i = 0; i < weights.size(); ++i) {
    const ManifestParameter &param = manifest.parameters[i];
    gradArguments[param.name] = weights[i].data();
    if (!param.auxRouter)
      continue;
    firstMoments.emplace_back(param.numElements(), 0.0f);
    secondMoments.emplace_back(param.numElements(), 0.0f);
    stepArguments[param.name] = stepResults[param.name] = weights[i].data();
    auto grad = gradResults.find("grad." + param.name);
    if (grad == gradResults.end())
      return auxError("the grad_aux entry point lacks grad." + param.name);
    stepArguments["grad." + param.name] = grad->second;
    stepArguments["optim.m." + param.name] =
        stepResults["optim.m." + param.name] = firstMoments.back().data();
    stepArguments["optim.v." + param.name] =
        stepResults["optim.v." + param.name] = secondMoments.back().data();
  }
  stepArguments["schedule"] = schedule.data();
  stepResults["grad_norm"] = gradNorm.data();
  // The frozen model stays on a CUDA artifact's GPU; the routers, their
  // gradients and moments (small) are copied for each call, so that the
  // host checks and saves them as they are.
  if (llvm::Error error = weights.keepOnDevice(
          artifact,
          [](const ManifestParameter &param) { return !param.auxRouter; }))
    return error;
  auto gradBound = bindByName(gradSpec, gradArguments, gradResults);
  if (!gradBound)
    return gradBound.takeError();
  gradBuffers = std::move(*gradBound);
  auto updateBound = bindByName(updateSpec, stepArguments, stepResults);
  if (!updateBound)
    return updateBound.takeError();
  updateBuffers = std::move(*updateBound);
  for (auto [spec, buffer] : llvm::zip(gradSpec.results, outputs)) {
    if (llvm::StringRef(spec.name).starts_with("grad."))
      gradients.push_back({spec.name, &buffer});
    if (!llvm::StringRef(spec.name).starts_with("bce."))
      continue;
    std::string router = spec.name.substr(4);
    void *confusion = gradResults.lookup("confusion." + router);
    if (!confusion)
      return auxError("the grad_aux entry point lacks confusion." + router);
    routers.push_back(
        {router, buffer.data(), static_cast<const float *>(confusion)});
  }
  return llvm::Error::success();
}

double AuxRouterStep::routerMetrics(llvm::json::Object &metrics) const {
  double accuracySum = 0;
  for (const Router &router : routers) {
    // [true positives, predicted positives, chosen, decisions]
    const float *c = router.confusion;
    double correct = c[3] - c[1] - c[2] + 2 * c[0];
    double accuracy = ratio(correct, c[3]);
    accuracySum += accuracy;
    metrics["bce." + router.name] = jsonNumber(*router.bce);
    metrics["accuracy." + router.name] = accuracy;
    metrics["precision." + router.name] = ratio(c[0], c[1]);
    metrics["recall." + router.name] = ratio(c[0], c[2]);
  }
  return routers.empty() ? 0.0 : accuracySum / double(routers.size());
}

llvm::Expected<StepOutcome> AuxRouterStep::run(int64_t step, double lr) {
  if (llvm::Error error = data.stream->next(manifest.batchSize, tokens))
    return std::move(error);
  if (llvm::Error error = gradFunction(gradBuffers.data()))
    return std::move(error);
  StepOutcome outcome;
  outcome.loss = outputs[0][0];
  if (!std::isfinite(outcome.loss))
    outcome.nonFinite = llvm::formatv("the loss is {0}", outcome.loss).str();
  for (const auto &[name, values] : gradients)
    if (outcome.nonFinite.empty() &&
        !llvm::all_of(*values, [](float g) { return std::isfinite(g); }))
      outcome.nonFinite = name + " is not finite";
  if (!outcome.nonFinite.empty())
    return outcome;
  schedule = adamwSchedule(config.train, lr, step);
  if (llvm::Error error = updateFunction(updateBuffers.data()))
    return std::move(error);
  outcome.gradNorm = gradNorm[0];
  double accuracy = routerMetrics(outcome.metrics);
  outcome.progress = llvm::formatv(" | mean accuracy {0:F3} over {1} routers",
                                   accuracy, routers.size());
  return outcome;
}

} // namespace

llvm::Error momac::trainAuxRouters(const AuxTrainOptions &options) {
  llvm::Expected<LoadedArtifact> artifact =
      LoadedArtifact::open(options.artifact);
  if (!artifact)
    return artifact.takeError();
  llvm::outs() << "momarun: " << artifact->gemmLibraries() << "\n";
  const Manifest &manifest = artifact->manifest();
  const ModelConfig &config = artifact->config();
  if (!config.auxRouters)
    return auxError(manifest.model +
                    " has no auxiliary routers to train; add \"aux_routers\": "
                    "true to its description and recompile");
  auto gradEntry = artifact->entryPoint("grad_aux");
  if (!gradEntry)
    return gradEntry.takeError();
  auto stepEntry = artifact->entryPoint("optimizer_step_aux");
  if (!stepEntry)
    return stepEntry.takeError();
  llvm::Expected<Weights> weights = Weights::load(manifest, options.weights);
  if (!weights)
    return weights.takeError();
  llvm::Expected<PackedDataset> data = openPackedDataset(
      options.dataPrefix, manifest.seqLen, manifest.vocabSize);
  if (!data)
    return data.takeError();
  // One writer per run directory; not a training run's.
  llvm::Expected<RunLock> lock =
      RunLock::acquire(options.runDirectory, "train-aux");
  if (!lock)
    return lock.takeError();

  AuxRouterStep step(options, *artifact, std::move(*weights), std::move(*data),
                     gradEntry->second, stepEntry->second);
  if (llvm::Error error = step.bind(*gradEntry->first, *stepEntry->first))
    return error;
  const std::string metricsPath = options.runDirectory + "/metrics.jsonl";
  llvm::sys::fs::remove(metricsPath);
  llvm::Expected<MetricsLog> metrics = MetricsLog::open(metricsPath, true);
  if (!metrics)
    return metrics.takeError();
  // The schedule of train.* over this run's steps: warm-up for a tenth of
  // them at most (train.warmup_steps if fewer), then the decay to min_lr.
  TrainLoopOptions loop;
  loop.schedule = config.train;
  loop.schedule.totalSteps = options.steps;
  loop.schedule.warmupSteps =
      std::min(config.train.warmupSteps, options.steps / 10);
  loop.steps = options.steps;
  loop.checkpointEvery = options.steps; // the weights, once at the end
  loop.logEvery = options.logEvery;
  loop.skipNonFinite = options.skipNonFinite;
  auto start = std::chrono::steady_clock::now();
  if (llvm::Error error = runTrainLoop(step, *metrics, loop))
    return error;
  double seconds = std::chrono::duration<double>(
                       std::chrono::steady_clock::now() - start)
                       .count();
  llvm::outs() << llvm::formatv("trained {0} auxiliary routers for {1} steps "
                                "in {2:F1} s; wrote {3}\n",
                                step.routerCount(), options.steps, seconds,
                                step.weightsPath());
  return llvm::Error::success();
}
