//===- Trainer.cpp - The training loop of momarun -------------------------===//

#include "runtime/train/Trainer.h"

#include "lib/config/ModelStats.h"
#include "lib/safetensors/Safetensors.h"
#include "lib/support/AtomicFile.h"
#include "runtime/artifact/LoadedArtifact.h"
#include "runtime/data/IndexedDataset.h"
#include "runtime/data/SequenceStream.h"
#include "runtime/model/Weights.h"
#include "runtime/train/RunRecord.h"
#include "runtime/train/TrainingCheckpoint.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>
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

std::string formatDuration(double seconds) {
  int64_t s = int64_t(seconds + 0.5);
  return llvm::formatv("{0}:{1:2}:{2:2}", s / 3600, (s / 60) % 60, s % 60)
      .str();
}

} // namespace

llvm::Error momac::truncateMetrics(llvm::StringRef path, int64_t lastStep) {
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/true);
  if (!buffer)
    return llvm::Error::success();
  std::string kept;
  llvm::SmallVector<llvm::StringRef> lines;
  (*buffer)->getBuffer().split(lines, '\n', -1, false);
  for (llvm::StringRef line : lines) {
    llvm::Expected<llvm::json::Value> value = llvm::json::parse(line);
    if (!value) {
      llvm::consumeError(value.takeError());
      continue;
    }
    const llvm::json::Object *object = value->getAsObject();
    std::optional<int64_t> step =
        object ? object->getInteger("step") : std::nullopt;
    if (step && *step <= lastStep)
      kept += line.str() + "\n";
  }
  std::error_code ec;
  llvm::raw_fd_ostream out(path, ec, llvm::sys::fs::OF_Text);
  if (ec)
    return trainError(path + ": " + ec.message());
  out << kept;
  return llvm::Error::success();
}

llvm::json::Value momac::jsonNumber(double value) {
  if (!std::isfinite(value))
    return nullptr;
  return value;
}

llvm::json::Object momac::nonFiniteStepLine(int64_t step, double loss,
                                            double lr, bool skipped) {
  return llvm::json::Object{{"step", step},
                            {"loss", jsonNumber(loss)},
                            {"lr", lr},
                            {"grad_norm", nullptr},
                            {"skipped", skipped}};
}

std::string momac::nonFiniteStopMessage(int64_t step, llvm::StringRef what,
                                        int64_t lastCheckpoint,
                                        llvm::StringRef checkpointForm) {
  return llvm::formatv(
             "step {0}: {1}; stopped without updating the weights ({2}; "
             "--skip-nonfinite N skips up to N such steps)",
             step, what,
             lastCheckpoint
                 ? llvm::formatv("{0} holds step {1}, the last good state",
                                 checkpointForm, lastCheckpoint)
                       .str()
                 : std::string("no step completed, no checkpoint"))
      .str();
}

void momac::warnNonFiniteSkipped(int64_t step, llvm::StringRef what,
                                 int64_t skippedSteps, int64_t allowed) {
  llvm::errs() << llvm::formatv(
      "momarun: warning: step {0}: {1}; update skipped ({2} of "
      "--skip-nonfinite {3})\n",
      step, what, skippedSteps, allowed);
}

double momac::learningRate(const TrainConfig &train, int64_t step) {
  const int64_t total = train.totalSteps;
  const int64_t warmup = std::min(train.warmupSteps, total);
  if (warmup > 0 && step <= warmup)
    return train.lr * double(step) / double(warmup);
  if (step < total)
    return train.lr + (train.minLr - train.lr) * double(step - warmup) /
                          double(total - warmup);
  return train.minLr;
}

llvm::Error momac::train(const TrainOptions &options) {
  llvm::Expected<LoadedArtifact> artifact =
      LoadedArtifact::open(options.artifact);
  if (!artifact)
    return artifact.takeError();
  const Manifest &manifest = artifact->manifest();
  const ModelConfig &config = artifact->config();
  const TrainConfig &hyper = config.train;
  // The state alone (momac --report; momac --stats adds the activations),
  // in this machine's memory and, for a CUDA artifact, the GPU's.
  const int64_t stateBytes = computeModelStats(config).totalStateBytes();
  const std::string stateWhat =
      "training " + manifest.model + " (weights, gradients and AdamW moments)";
  if (llvm::Error error = checkMemoryEstimate(stateBytes, stateWhat,
                                              options.memoryLimitBytes))
    return error;
  if (llvm::Error error = artifact->checkDeviceMemory(stateBytes, stateWhat))
    return error;
  auto gradEntry = artifact->entryPoint("grad");
  if (!gradEntry)
    return gradEntry.takeError();
  auto stepEntry = artifact->entryPoint("optimizer_step");
  if (!stepEntry)
    return stepEntry.takeError();
  if (std::string gpu = artifact->deviceDescription(); !gpu.empty())
    llvm::errs() << "momarun: training on " << gpu << "\n";

  if (std::error_code ec =
          llvm::sys::fs::create_directories(options.runDirectory))
    return trainError(options.runDirectory + ": " + ec.message());
  const std::string checkpointPath =
      joinPath(options.runDirectory, "checkpoint.safetensors");
  const std::string metricsPath =
      joinPath(options.runDirectory, "metrics.jsonl");
  // A checkpoint write killed with -9 leaves its temporary behind.
  if (unsigned stale = removeStaleTemporaries(checkpointPath))
    llvm::errs() << llvm::formatv("momarun: removed {0} temporary file(s) of "
                                  "an interrupted checkpoint write in {1}\n",
                                  stale, options.runDirectory);

  // Router noise (moe.gumbel): drawn per micro-batch from its own stream,
  // whose state the checkpoints keep so that a resumed run draws the same.
  const EntryPointSpec &gradSpec = *gradEntry->first;
  const BufferSpec *noiseSpec = nullptr;
  for (const BufferSpec &spec : gradSpec.arguments)
    if (spec.name == kGumbelNoiseArgument)
      noiseSpec = &spec;
  const uint64_t seed = options.seed.value_or(uint64_t(config.train.seed));
  std::mt19937_64 noiseRng(seed ^ 0x9e3779b97f4a7c15ULL);
  std::vector<float> noise(noiseSpec ? noiseSpec->numElements() : 0);

  // Parameters and AdamW moments, from a checkpoint or fresh.
  int64_t firstStep = 1;
  uint64_t dataPosition = 0;
  std::vector<std::vector<float>> firstMoments, secondMoments;
  std::optional<Weights> weights;
  if (options.resume) {
    // The latest checkpoint, of one rank or a shard set of several.
    llvm::Expected<TrainingState> state =
        readTrainingCheckpoint(options.runDirectory, manifest.parameters);
    if (!state)
      return state.takeError();
    weights = Weights::initialize(manifest, 0);
    for (size_t i = 0; i < weights->size(); ++i)
      (*weights)[i] = std::move(state->weights[i]);
    firstMoments = std::move(state->firstMoments);
    secondMoments = std::move(state->secondMoments);
    if (noiseSpec) {
      std::istringstream stream(state->rng);
      if (!(stream >> noiseRng))
        return trainError(state->source +
                          ": metadata lacks the router-noise RNG state (rng)");
    }
    dataPosition = state->dataPosition;
    firstStep = state->step + 1;
    if (llvm::Error error = truncateMetrics(metricsPath, state->step))
      return error;
  } else {
    if (!options.initWeights.empty()) {
      llvm::Expected<Weights> loaded =
          Weights::load(manifest, options.initWeights);
      if (!loaded)
        return loaded.takeError();
      weights = std::move(*loaded);
    } else {
      weights = Weights::initialize(manifest, seed);
    }
    // Stage 2 of an upcycling: where stage 1's data and compute stopped.
    int64_t stageOneSteps = 0;
    if (!options.dataPositionFrom.empty()) {
      llvm::Expected<std::pair<uint64_t, int64_t>> from =
          readDataPosition(options.dataPositionFrom);
      if (!from)
        return from.takeError();
      std::tie(dataPosition, stageOneSteps) = *from;
    }
    for (const ManifestParameter &param : manifest.parameters) {
      size_t size = param.auxRouter ? 0 : size_t(param.numElements());
      firstMoments.emplace_back(size, 0.0f);
      secondMoments.emplace_back(size, 0.0f);
    }
    llvm::sys::fs::remove(metricsPath);
    if (llvm::Error error = writeNewRunRecord(
            options.runDirectory, config,
            manifest.batchSize * manifest.seqLen * hyper.microBatches,
            options.dataPositionFrom, stageOneSteps))
      return error;
  }

  llvm::Expected<PackedDataset> data = openPackedDataset(
      options.dataPrefix, manifest.seqLen, manifest.vocabSize);
  if (!data)
    return data.takeError();
  SequenceStream *stream = data->stream.get();
  stream->seek(dataPosition);

  // Buffers, bound by name to the entry points.
  const int64_t batch = manifest.batchSize, seqLen = manifest.seqLen;
  const int64_t microBatches = hyper.microBatches;
  std::vector<int32_t> tokens(batch * (seqLen + 1));
  llvm::StringMap<void *> gradArguments, gradResults, stepArguments,
      stepResults;
  gradArguments["tokens"] = tokens.data();
  int32_t batchRows = int32_t(batch);
  if (takesBatchRows(gradSpec))
    gradArguments[kBatchRowsArgument] = &batchRows;
  if (noiseSpec)
    gradArguments[kGumbelNoiseArgument] = noise.data();
  std::vector<std::vector<float>> gradOutputs =
      allocateResults(gradSpec, gradResults);
  // Where each parameter's gradient lands among the grad results.
  std::vector<size_t> gradIndex;
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
  std::vector<std::vector<float>> meanGrads(weights->size());
  std::vector<float> schedule(3), gradNorm(1);
  for (size_t i = 0; i < weights->size(); ++i) {
    const ManifestParameter &param = manifest.parameters[i];
    gradArguments[param.name] = (*weights)[i].data();
    if (microBatches > 1)
      meanGrads[i].resize(param.numElements());
    // The update is element-wise: tensors are updated in place.
    stepArguments[param.name] = stepResults[param.name] = (*weights)[i].data();
    stepArguments["grad." + param.name] =
        microBatches > 1 ? meanGrads[i].data()
                         : gradOutputs[gradIndex[i]].data();
    stepArguments["optim.m." + param.name] =
        stepResults["optim.m." + param.name] = firstMoments[i].data();
    stepArguments["optim.v." + param.name] =
        stepResults["optim.v." + param.name] = secondMoments[i].data();
  }
  stepArguments["schedule"] = schedule.data();
  stepResults["grad_norm"] = gradNorm.data();
  auto gradBuffers = bindByName(gradSpec, gradArguments, gradResults);
  if (!gradBuffers)
    return gradBuffers.takeError();
  auto stepBuffers = bindByName(*stepEntry->first, stepArguments, stepResults);
  if (!stepBuffers)
    return stepBuffers.takeError();

  // The training state stays where the step runs: on a CUDA artifact's GPU,
  // from the first call on. Per micro-batch only the tokens (and router
  // noise) go up and the losses come down; per step, the gradient norm.
  for (size_t i = 0; i < weights->size(); ++i) {
    const std::string &name = manifest.parameters[i].name;
    auto keep = [&](std::vector<float> &buffer,
                    const std::string &what) -> llvm::Error {
      if (buffer.empty())
        return llvm::Error::success();
      return artifact->keepOnDevice(buffer.data(),
                                    buffer.size() * sizeof(float), what);
    };
    for (auto [buffer, what] :
         {std::pair{&(*weights)[i], name}, {&firstMoments[i], "optim.m." + name},
          {&secondMoments[i], "optim.v." + name},
          {&gradOutputs[gradIndex[i]], "grad." + name},
          {&meanGrads[i], "the mean of grad." + name}})
      if (llvm::Error error = keep(*buffer, what))
        return error;
  }

  // What this one rank holds (compare mpirun -np R: each rank 1/R of it).
  RankMemory memory;
  for (size_t i = 0; i < weights->size(); ++i) {
    memory.parameterBytes += int64_t((*weights)[i].size() * sizeof(float));
    memory.optimizerBytes += int64_t(
        (firstMoments[i].size() + secondMoments[i].size()) * sizeof(float));
    memory.gradientBytes += int64_t(
        (gradOutputs[gradIndex[i]].size() + meanGrads[i].size()) *
        sizeof(float));
  }
  reportRankMemory(llvm::outs(), options.runDirectory, 0, 1, "", memory);

  std::error_code ec;
  llvm::raw_fd_ostream metrics(metricsPath, ec, llvm::sys::fs::OF_Append);
  if (ec)
    return trainError(metricsPath + ": " + ec.message());
  const bool terminal = llvm::sys::Process::StandardOutIsDisplayed();
  const size_t modalities = config.modalities.size();
  const int64_t lastStep = firstStep + options.steps - 1;
  auto runStart = std::chrono::steady_clock::now();

  auto saveCheckpoint = [&](int64_t completed) -> llvm::Error {
    for (size_t i = 0; i < weights->size(); ++i)
      for (std::vector<float> *buffer :
           {&(*weights)[i], &firstMoments[i], &secondMoments[i]})
        if (llvm::Error error = artifact->copyToHost(buffer->data()))
          return error;
    CheckpointProgress progress;
    progress.step = completed;
    progress.dataPosition = stream->position();
    progress.rng = rngState(noiseSpec ? &noiseRng : nullptr);
    progress.model = manifest.model;
    if (llvm::Error error = writeSingleCheckpoint(
            checkpointPath, manifest.parameters, weights->tensors(),
            firstMoments, secondMoments, progress))
      return error;
    // A shard set an earlier run on several ranks left is older now.
    removeOtherCheckpoints(options.runDirectory, {checkpointPath});
    return llvm::Error::success();
  };

  // Which gradient went non-finite, for the message: read from the device
  // only then.
  auto nonFiniteGradient = [&]() -> llvm::Expected<std::string> {
    for (size_t i = 0; i < weights->size(); ++i) {
      std::vector<float> &g =
          microBatches > 1 ? meanGrads[i] : gradOutputs[gradIndex[i]];
      if (llvm::Error error = artifact->copyToHost(g.data()))
        return std::move(error);
      if (!std::all_of(g.begin(), g.end(),
                       [](float x) { return std::isfinite(x); }))
        return "grad." + manifest.parameters[i].name + " holds NaN or Inf";
    }
    return std::string("every gradient is finite; their sum of squares "
                       "overflows");
  };

  int64_t skippedSteps = 0;
  int64_t lastCheckpoint = options.resume ? firstStep - 1 : 0;
  for (int64_t step = firstStep; step <= lastStep; ++step) {
    auto stepStart = std::chrono::steady_clock::now();
    // Where the data and the noise stood before this step: a checkpoint of
    // the state before a step that went non-finite resumes from here.
    const uint64_t stepDataPosition = stream->position();
    const std::mt19937_64 stepNoiseRng = noiseRng;
    double loss = 0;
    std::vector<double> modalitySum(modalities, 0);
    std::vector<uint64_t> modalityCount(modalities, 0);
    for (int64_t micro = 0; micro < microBatches; ++micro) {
      if (llvm::Error error = stream->next(batch, tokens))
        return error;
      if (noiseSpec)
        sampleGumbelNoise(noiseRng, noise);
      if (llvm::Error error = gradEntry->second(gradBuffers->data()))
        return error;
      loss += gradOutputs[0][0] / double(microBatches);
      std::vector<uint64_t> counts = config.countTargetsByModality(tokens);
      for (size_t m = 0; m < modalities; ++m) {
        modalitySum[m] += double(gradOutputs[1 + m][0]) * double(counts[m]);
        modalityCount[m] += counts[m];
      }
      if (microBatches > 1)
        for (size_t i = 0; i < meanGrads.size(); ++i)
          if (llvm::Error error = artifact->accumulate(
                  meanGrads[i].data(), gradOutputs[gradIndex[i]].data(),
                  meanGrads[i].size(), 1.0f / float(microBatches),
                  /*first=*/micro == 0))
            return error;
    }
    double lr = learningRate(hyper, step);
    // A non-finite loss or gradient would turn every parameter into NaN
    // through the clipping scale. A non-finite loss is seen here; a
    // non-finite gradient makes the compiled step's norm non-finite, and
    // the step then leaves the weights and moments as they were
    // (SynthesizeOptimizerStep). Either way the run then stops or, with
    // --skip-nonfinite, skips the update.
    std::string nonFinite;
    if (!std::isfinite(loss)) {
      nonFinite = llvm::formatv("the loss is {0}", loss).str();
    } else {
      schedule = {float(lr), float(1 - std::pow(hyper.beta1, double(step))),
                  float(1 - std::pow(hyper.beta2, double(step)))};
      if (llvm::Error error = stepEntry->second(stepBuffers->data()))
        return error;
      if (!std::isfinite(gradNorm[0])) {
        llvm::Expected<std::string> which = nonFiniteGradient();
        if (!which)
          return which.takeError();
        nonFinite = "the gradient norm is not finite (" + *which + ")";
      }
    }
    bool skipped = false;
    if (!nonFinite.empty()) {
      bool skip = skippedSteps < options.skipNonFinite;
      metrics << llvm::formatv("{0}", llvm::json::Value(nonFiniteStepLine(
                                          step, loss, lr, skip)))
              << "\n";
      metrics.flush();
      if (!skip && lastCheckpoint < step - 1) {
        // The weights are still those after step - 1, all finite: keep them.
        stream->seek(stepDataPosition);
        noiseRng = stepNoiseRng;
        if (llvm::Error error = saveCheckpoint(step - 1))
          return error;
        lastCheckpoint = step - 1;
      }
      if (!skip)
        return trainError(nonFiniteStopMessage(step, nonFinite, lastCheckpoint,
                                               "RUN/checkpoint.safetensors"));
      ++skippedSteps;
      skipped = true;
      warnNonFiniteSkipped(step, nonFinite, skippedSteps,
                           options.skipNonFinite);
    }

    auto now = std::chrono::steady_clock::now();
    double stepSeconds = std::chrono::duration<double>(now - stepStart).count();
    double tokensPerSecond =
        double(microBatches * batch * seqLen) / stepSeconds;
    llvm::json::Object line{{"step", step},
                            {"loss", jsonNumber(loss)},
                            {"lr", lr},
                            {"grad_norm", jsonNumber(gradNorm[0])},
                            {"tokens_per_s", jsonNumber(tokensPerSecond)}};
    std::string modalityText;
    for (size_t m = 0; m < modalities; ++m) {
      double value =
          modalityCount[m] ? modalitySum[m] / double(modalityCount[m]) : 0.0;
      line["loss." + config.modalities[m].name] = jsonNumber(value);
      modalityText +=
          llvm::formatv(" {0} {1:F4}", config.modalities[m].name, value);
    }
    if (!skipped) {
      metrics << llvm::formatv("{0}", llvm::json::Value(std::move(line)))
              << "\n";
      metrics.flush();
    }

    if ((step - firstStep + 1) % options.checkpointEvery == 0 ||
        step == lastStep) {
      if (llvm::Error error = saveCheckpoint(step))
        return error;
      lastCheckpoint = step;
    }

    double elapsed = std::chrono::duration<double>(now - runStart).count();
    double eta =
        elapsed / double(step - firstStep + 1) * double(lastStep - step);
    std::string progress = llvm::formatv(
        "step {0}/{1} loss {2:F4}{3} | lr {4:e2} | {5:F0} tok/s | ETA {6}",
        step, lastStep, loss, modalityText, lr, tokensPerSecond,
        formatDuration(eta));
    if (terminal) {
      int64_t done = (step - firstStep + 1) * 20 / options.steps;
      llvm::outs() << "\r[" << std::string(done, '=')
                   << std::string(20 - done, ' ') << "] " << progress
                   << "\x1b[K";
      if (step == lastStep)
        llvm::outs() << "\n";
      llvm::outs().flush();
    } else if ((step - firstStep + 1) % options.logEvery == 0 ||
               step == firstStep || step == lastStep) {
      llvm::outs() << progress << "\n";
      llvm::outs().flush();
    }
  }
  if (auto copies = artifact->residentStatistics())
    llvm::errs() << llvm::formatv(
        "momarun: the training state ({0:F1} MB) stayed in device memory: {1} "
        "uploads ({2:F1} MB), {3} downloads ({4:F1} MB) in {5} steps\n",
        double(copies->deviceBytes) / 1e6, copies->uploads,
        double(copies->uploadedBytes) / 1e6, copies->downloads,
        double(copies->downloadedBytes) / 1e6, options.steps);
  return llvm::Error::success();
}
