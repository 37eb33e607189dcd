//===- Trainer.cpp - Training on one rank ---------------------------------===//
//
// The one-rank TrainStep: @grad for each micro-batch, their mean where the
// step runs, then @optimizer_step (clipping and AdamW). The training state
// (weights, gradients, their mean, AdamW moments) stays where the artifact's
// steps run: on a CUDA artifact's GPU from the first call on, so that per
// micro-batch only the tokens (and router noise) go up and the losses come
// down, and per step the gradient norm.
//
//===----------------------------------------------------------------------===//

#include "runtime/train/Trainer.h"

#include "lib/config/ModelStats.h"
#include "lib/support/AtomicFile.h"
#include "runtime/artifact/LoadedArtifact.h"
#include "runtime/data/IndexedDataset.h"
#include "runtime/data/SequenceStream.h"
#include "runtime/model/Weights.h"
#include "runtime/train/RunLock.h"
#include "runtime/train/RunRecord.h"
#include "runtime/train/TrainLoop.h"
#include "runtime/train/TrainingCheckpoint.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>
#include <sstream>

using namespace momac;

namespace {

llvm::Error trainError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message.str());
}

std::string joinPath(llvm::StringRef directory, llvm::StringRef file) {
  llvm::SmallString<256> path(directory);
  llvm::sys::path::append(path, file);
  return path.str().str();
}

/// Where a run starts: its weights, AdamW moments, data position, step and
/// router-noise stream, from the run's checkpoint or fresh.
struct StartState {
  std::optional<Weights> weights;
  std::vector<std::vector<float>> firstMoments, secondMoments;
  uint64_t dataPosition = 0;
  int64_t firstStep = 1;
  std::mt19937_64 noiseRng;
};

class SingleRankStep : public TrainStep {
public:
  SingleRankStep(const TrainOptions &options, const LoadedArtifact &artifact,
                 StartState start, PackedDataset data,
                 LoadedArtifact::EntryFunction grad,
                 LoadedArtifact::EntryFunction update)
      : options(options), artifact(artifact), manifest(artifact.manifest()),
        config(artifact.config()), weights(std::move(*start.weights)),
        firstMoments(std::move(start.firstMoments)),
        secondMoments(std::move(start.secondMoments)),
        noiseRng(start.noiseRng), data(std::move(data)),
        gradFunction(std::move(grad)), updateFunction(std::move(update)) {
    stepDataPosition = start.dataPosition;
    stepNoiseRng = noiseRng;
  }

  /// Binds the buffers of both entry points and keeps the training state
  /// where the steps run.
  llvm::Error bind(const EntryPointSpec &gradSpec,
                   const EntryPointSpec &updateSpec);

  llvm::Expected<StepOutcome> run(int64_t step, double lr) override;
  llvm::Error checkpoint(int64_t completed) override;
  void rewind() override {
    data.stream->seek(stepDataPosition);
    noiseRng = stepNoiseRng;
  }
  int64_t tokensPerStep() const override {
    return config.train.microBatches * manifest.batchSize * manifest.seqLen;
  }
  std::string checkpointName() const override {
    return "RUN/checkpoint.safetensors";
  }

  /// What this rank holds (compare mpirun -np R: each rank 1/R of it).
  RankMemory memory() const;

private:
  /// The micro-batches of a step: their gradients, summed into the mean
  /// where the steps run; adds each one's losses to `outcome`.
  llvm::Error runMicroBatches(StepOutcome &outcome);
  /// Which gradient went non-finite, for the message: read back only then.
  llvm::Expected<std::string> nonFiniteGradient();
  std::vector<float> &gradientOf(size_t i) {
    return microBatches() > 1 ? meanGrads[i] : gradOutputs[gradIndex[i]];
  }
  int64_t microBatches() const { return config.train.microBatches; }

  const TrainOptions &options;
  const LoadedArtifact &artifact;
  const Manifest &manifest;
  const ModelConfig &config;
  Weights weights;
  std::vector<std::vector<float>> firstMoments, secondMoments;
  std::mt19937_64 noiseRng, stepNoiseRng;
  uint64_t stepDataPosition = 0;
  PackedDataset data;
  LoadedArtifact::EntryFunction gradFunction, updateFunction;

  std::vector<int32_t> tokens;
  int32_t batchRows = 0;
  /// Router noise (moe.gumbel), drawn per micro-batch from its own stream,
  /// whose state the checkpoints keep so that a resumed run draws the same.
  std::vector<float> noise;
  std::vector<std::vector<float>> gradOutputs, meanGrads;
  /// Where each parameter's gradient lands among the grad results.
  std::vector<size_t> gradIndex;
  std::array<float, 3> schedule{};
  std::vector<float> gradNorm = {0.0f};
  std::vector<void *> gradBuffers, updateBuffers;
};

llvm::Error SingleRankStep::bind(const EntryPointSpec &gradSpec,
                                 const EntryPointSpec &updateSpec) {
  const int64_t batch = manifest.batchSize;
  tokens.assign(batch * (manifest.seqLen + 1), 0);
  batchRows = int32_t(batch);
  llvm::StringMap<void *> gradArguments, gradResults, stepArguments,
      stepResults;
  gradArguments["tokens"] = tokens.data();
  if (takesBatchRows(gradSpec))
    gradArguments[kBatchRowsArgument] = &batchRows;
  for (const BufferSpec &spec : gradSpec.arguments)
    if (spec.name == kGumbelNoiseArgument) {
      noise.assign(spec.numElements(), 0.0f);
      gradArguments[kGumbelNoiseArgument] = noise.data();
    }
  gradOutputs = allocateResults(gradSpec, gradResults);
  for (const ManifestParameter &param : manifest.parameters) {
    size_t index = 0;
    while (index < gradSpec.results.size() &&
           gradSpec.results[index].name != "grad." + param.name)
      ++index;
    if (index == gradSpec.results.size())
      return trainError("the grad entry point lacks grad." + param.name);
    gradIndex.push_back(index);
  }
  // With one micro-batch the optimizer reads the gradients where the grad
  // entry point wrote them; with more, it reads their running mean.
  meanGrads.resize(weights.size());
  for (size_t i = 0; i < weights.size(); ++i) {
    const ManifestParameter &param = manifest.parameters[i];
    gradArguments[param.name] = weights[i].data();
    if (microBatches() > 1)
      meanGrads[i].resize(param.numElements());
    // The update is element-wise: tensors are updated in place.
    stepArguments[param.name] = stepResults[param.name] = weights[i].data();
    stepArguments["grad." + param.name] = gradientOf(i).data();
    stepArguments["optim.m." + param.name] =
        stepResults["optim.m." + param.name] = firstMoments[i].data();
    stepArguments["optim.v." + param.name] =
        stepResults["optim.v." + param.name] = secondMoments[i].data();
  }
  stepArguments["schedule"] = schedule.data();
  stepResults["grad_norm"] = gradNorm.data();
  auto gradBound = bindByName(gradSpec, gradArguments, gradResults);
  if (!gradBound)
    return gradBound.takeError();
  gradBuffers = std::move(*gradBound);
  auto updateBound = bindByName(updateSpec, stepArguments, stepResults);
  if (!updateBound)
    return updateBound.takeError();
  updateBuffers = std::move(*updateBound);

  Device &device = artifact.device();
  for (size_t i = 0; i < weights.size(); ++i) {
    const std::string &name = manifest.parameters[i].name;
    for (auto [buffer, what] :
         {std::pair{&weights[i], name}, {&firstMoments[i], "optim.m." + name},
          {&secondMoments[i], "optim.v." + name},
          {&gradOutputs[gradIndex[i]], "grad." + name},
          {&meanGrads[i], "the mean of grad." + name}})
      if (!buffer->empty())
        if (llvm::Error error = device.keep(
                buffer->data(), buffer->size() * sizeof(float), what))
          return error;
  }
  return llvm::Error::success();
}

RankMemory SingleRankStep::memory() const {
  RankMemory memory;
  for (size_t i = 0; i < weights.size(); ++i) {
    memory.parameterBytes += int64_t(weights[i].size() * sizeof(float));
    memory.optimizerBytes += int64_t(
        (firstMoments[i].size() + secondMoments[i].size()) * sizeof(float));
    memory.gradientBytes += int64_t(
        (gradOutputs[gradIndex[i]].size() + meanGrads[i].size()) *
        sizeof(float));
  }
  return memory;
}

llvm::Error SingleRankStep::runMicroBatches(StepOutcome &outcome) {
  const size_t modalities = config.modalities.size();
  std::vector<double> modalitySum(modalities, 0);
  std::vector<uint64_t> modalityCount(modalities, 0);
  for (int64_t micro = 0; micro < microBatches(); ++micro) {
    if (llvm::Error error = data.stream->next(manifest.batchSize, tokens))
      return error;
    if (!noise.empty())
      sampleGumbelNoise(noiseRng, noise);
    if (llvm::Error error = gradFunction(gradBuffers.data()))
      return error;
    outcome.loss += gradOutputs[0][0] / double(microBatches());
    std::vector<uint64_t> counts = config.countTargetsByModality(tokens);
    for (size_t m = 0; m < modalities; ++m) {
      modalitySum[m] += double(gradOutputs[1 + m][0]) * double(counts[m]);
      modalityCount[m] += counts[m];
    }
    if (microBatches() > 1)
      for (size_t i = 0; i < meanGrads.size(); ++i)
        if (llvm::Error error = artifact.device().accumulate(
                meanGrads[i].data(), gradOutputs[gradIndex[i]].data(),
                meanGrads[i].size(), 1.0f / float(microBatches()),
                /*first=*/micro == 0))
          return error;
  }
  modalityMetrics(config, modalitySum, modalityCount, outcome);
  return llvm::Error::success();
}

llvm::Expected<std::string> SingleRankStep::nonFiniteGradient() {
  for (size_t i = 0; i < weights.size(); ++i) {
    std::vector<float> &g = gradientOf(i);
    if (llvm::Error error = artifact.device().copyToHost(g.data()))
      return std::move(error);
    if (!std::all_of(g.begin(), g.end(),
                     [](float x) { return std::isfinite(x); }))
      return "grad." + manifest.parameters[i].name + " holds NaN or Inf";
  }
  return std::string("every gradient is finite; their sum of squares "
                     "overflows");
}

llvm::Expected<StepOutcome> SingleRankStep::run(int64_t step, double lr) {
  stepDataPosition = data.stream->position();
  stepNoiseRng = noiseRng;
  StepOutcome outcome;
  if (llvm::Error error = runMicroBatches(outcome))
    return std::move(error);
  // A non-finite loss is seen here; a non-finite gradient makes the
  // compiled step's norm non-finite, and the step then leaves the weights
  // and moments as they were (SynthesizeOptimizerStep).
  gradNorm[0] = 0.0f;
  if (!std::isfinite(outcome.loss)) {
    outcome.nonFinite = llvm::formatv("the loss is {0}", outcome.loss).str();
  } else {
    schedule = adamwSchedule(config.train, lr, step);
    if (llvm::Error error = updateFunction(updateBuffers.data()))
      return std::move(error);
    if (!std::isfinite(gradNorm[0])) {
      llvm::Expected<std::string> which = nonFiniteGradient();
      if (!which)
        return which.takeError();
      outcome.nonFinite = "the gradient norm is not finite (" + *which + ")";
    }
  }
  outcome.gradNorm = gradNorm[0];
  return outcome;
}

llvm::Error SingleRankStep::checkpoint(int64_t completed) {
  for (size_t i = 0; i < weights.size(); ++i)
    for (std::vector<float> *buffer :
         {&weights[i], &firstMoments[i], &secondMoments[i]})
      if (llvm::Error error = artifact.device().copyToHost(buffer->data()))
        return error;
  CheckpointProgress progress;
  progress.step = completed;
  progress.dataPosition = data.stream->position();
  progress.rng = rngState(noise.empty() ? nullptr : &noiseRng);
  progress.model = manifest.model;
  progress.globalBatch = config.train.microBatches * manifest.batchSize;
  const std::string path = singleCheckpointPath(options.runDirectory);
  if (llvm::Error error = writeSingleCheckpoint(
          path, manifest.parameters, weights.tensors(), firstMoments,
          secondMoments, progress))
    return error;
  // A shard set an earlier run on several ranks left is older now.
  removeShardSets(options.runDirectory);
  return llvm::Error::success();
}

/// The weights, moments, data position and first step of a run: from its
/// latest checkpoint (--resume), or fresh (--init or momarun's init, with
/// the data position of --data-position-from), in which case the run's
/// metrics start over and RUN/run.json is written.
llvm::Expected<StartState> startState(const TrainOptions &options,
                                      const LoadedArtifact &artifact,
                                      bool routerNoise) {
  const Manifest &manifest = artifact.manifest();
  const ModelConfig &config = artifact.config();
  const std::string metricsPath =
      joinPath(options.runDirectory, "metrics.jsonl");
  StartState start;
  const uint64_t seed = options.seed.value_or(uint64_t(config.train.seed));
  start.noiseRng.seed(seed ^ 0x9e3779b97f4a7c15ULL);
  if (options.resume) {
    // The latest checkpoint, of one rank or a shard set of several.
    llvm::Expected<TrainingState> state =
        readTrainingCheckpoint(options.runDirectory, manifest.parameters);
    if (!state)
      return state.takeError();
    if (llvm::Error error = checkResumedBatch(
            *state, config.train.microBatches * manifest.batchSize,
            llvm::formatv("1 rank x {0} micro-batch(es) x {1} sequences",
                          config.train.microBatches, manifest.batchSize)
                .str(),
            options.allowBatchChange, state->source))
      return std::move(error);
    start.weights = Weights::initialize(manifest, 0);
    for (size_t i = 0; i < start.weights->size(); ++i)
      (*start.weights)[i] = std::move(state->weights[i]);
    start.firstMoments = std::move(state->firstMoments);
    start.secondMoments = std::move(state->secondMoments);
    if (routerNoise) {
      std::istringstream stream(state->rng);
      if (!(stream >> start.noiseRng))
        return trainError(state->source +
                          ": metadata lacks the router-noise RNG state (rng)");
    }
    start.dataPosition = state->dataPosition;
    start.firstStep = state->step + 1;
    if (llvm::Error error = truncateMetrics(metricsPath, state->step))
      return std::move(error);
    return std::move(start);
  }
  if (!options.initWeights.empty()) {
    llvm::Expected<Weights> loaded =
        Weights::load(manifest, options.initWeights);
    if (!loaded)
      return loaded.takeError();
    start.weights = std::move(*loaded);
  } else {
    start.weights = Weights::initialize(manifest, seed);
  }
  // Stage 2 of an upcycling: where stage 1's data and compute stopped.
  int64_t stageOneSteps = 0;
  if (!options.dataPositionFrom.empty()) {
    llvm::Expected<std::pair<uint64_t, int64_t>> from =
        readDataPosition(options.dataPositionFrom);
    if (!from)
      return from.takeError();
    std::tie(start.dataPosition, stageOneSteps) = *from;
  }
  for (const ManifestParameter &param : manifest.parameters) {
    size_t size = param.auxRouter ? 0 : size_t(param.numElements());
    start.firstMoments.emplace_back(size, 0.0f);
    start.secondMoments.emplace_back(size, 0.0f);
  }
  llvm::sys::fs::remove(metricsPath);
  if (llvm::Error error = writeNewRunRecord(
          options.runDirectory, config,
          manifest.batchSize * manifest.seqLen * config.train.microBatches,
          options.dataPositionFrom, stageOneSteps))
    return std::move(error);
  return std::move(start);
}

} // namespace

llvm::Error momac::train(const TrainOptions &options) {
  llvm::Expected<LoadedArtifact> artifact =
      LoadedArtifact::open(options.artifact);
  if (!artifact)
    return artifact.takeError();
  llvm::outs() << "momarun: " << artifact->gemmLibraries() << "\n";
  const Manifest &manifest = artifact->manifest();
  const ModelConfig &config = artifact->config();
  // The state alone (momac --report; momac --stats adds the activations),
  // in this machine's memory and, for a CUDA artifact, the GPU's.
  const int64_t stateBytes = computeModelStats(config).totalStateBytes();
  const std::string stateWhat =
      "training " + manifest.model + " (weights, gradients and AdamW moments)";
  if (llvm::Error error = checkMemoryEstimate(stateBytes, stateWhat,
                                              options.memoryLimitBytes))
    return error;
  if (llvm::Error error = artifact->device().checkMemory(stateBytes, stateWhat))
    return error;
  auto gradEntry = artifact->entryPoint("grad");
  if (!gradEntry)
    return gradEntry.takeError();
  auto stepEntry = artifact->entryPoint("optimizer_step");
  if (!stepEntry)
    return stepEntry.takeError();
  if (std::string gpu = artifact->device().description(); !gpu.empty())
    llvm::errs() << "momarun: training on " << gpu << "\n";
  // One writer per run directory, for the whole run.
  llvm::Expected<RunLock> lock = RunLock::acquire(options.runDirectory, "train");
  if (!lock)
    return lock.takeError();
  // A checkpoint write killed with -9 leaves its temporary behind.
  if (unsigned stale = removeInterruptedCheckpointWrites(options.runDirectory))
    llvm::errs() << llvm::formatv("momarun: removed {0} temporary file(s) of "
                                  "an interrupted checkpoint write in {1}\n",
                                  stale, options.runDirectory);

  const EntryPointSpec &gradSpec = *gradEntry->first;
  const bool routerNoise =
      llvm::any_of(gradSpec.arguments, [](const BufferSpec &spec) {
        return spec.name == kGumbelNoiseArgument;
      });
  llvm::Expected<StartState> start =
      startState(options, *artifact, routerNoise);
  if (!start)
    return start.takeError();
  llvm::Expected<PackedDataset> data = openPackedDataset(
      options.dataPrefix, manifest.seqLen, manifest.vocabSize);
  if (!data)
    return data.takeError();
  data->stream->seek(start->dataPosition);
  const int64_t firstStep = start->firstStep;

  SingleRankStep step(options, *artifact, std::move(*start), std::move(*data),
                      gradEntry->second, stepEntry->second);
  if (llvm::Error error = step.bind(gradSpec, *stepEntry->first))
    return error;
  reportRankMemory(llvm::outs(), options.runDirectory, 0, 1, "",
                   step.memory());

  llvm::Expected<MetricsLog> metrics = MetricsLog::open(
      joinPath(options.runDirectory, "metrics.jsonl"), /*leader=*/true);
  if (!metrics)
    return metrics.takeError();
  TrainLoopOptions loop;
  loop.schedule = config.train;
  loop.firstStep = firstStep;
  loop.steps = options.steps;
  loop.checkpointEvery = options.checkpointEvery;
  loop.logEvery = options.logEvery;
  loop.skipNonFinite = options.skipNonFinite;
  loop.lastCheckpoint = options.resume ? firstStep - 1 : 0;
  if (llvm::Error error = runTrainLoop(step, *metrics, loop))
    return error;
  if (auto copies = artifact->device().copies())
    llvm::errs() << llvm::formatv(
        "momarun: the training state ({0:F1} MB) stayed in device memory: {1} "
        "uploads ({2:F1} MB), {3} downloads ({4:F1} MB) in {5} steps\n",
        double(copies->deviceBytes) / 1e6, copies->uploads,
        double(copies->uploadedBytes) / 1e6, copies->downloads,
        double(copies->downloadedBytes) / 1e6, options.steps);
  return llvm::Error::success();
}
