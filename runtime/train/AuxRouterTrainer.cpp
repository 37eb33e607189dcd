//===- AuxRouterTrainer.cpp - Training the auxiliary routers --------------===//

#include "runtime/train/AuxRouterTrainer.h"

#include "runtime/artifact/LoadedArtifact.h"
#include "runtime/data/IndexedDataset.h"
#include "runtime/data/SequenceStream.h"
#include "runtime/model/Weights.h"
#include "runtime/train/Trainer.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/Path.h"
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

} // namespace

llvm::Error momac::trainAuxRouters(const AuxTrainOptions &options) {
  llvm::Expected<LoadedArtifact> artifact =
      LoadedArtifact::open(options.artifact);
  if (!artifact)
    return artifact.takeError();
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
  const EntryPointSpec &gradSpec = *gradEntry->first;

  llvm::Expected<Weights> weights = Weights::load(manifest, options.weights);
  if (!weights)
    return weights.takeError();
  llvm::Expected<PackedDataset> data = openPackedDataset(
      options.dataPrefix, manifest.seqLen, manifest.vocabSize);
  if (!data)
    return data.takeError();
  SequenceStream *stream = data->stream.get();
  if (std::error_code ec =
          llvm::sys::fs::create_directories(options.runDirectory))
    return auxError(options.runDirectory + ": " + ec.message());

  // Buffers bound by name: the grad entry point reads the whole model and
  // writes aux_loss, bce.<router>, confusion.<router> and the aux routers'
  // gradients, which the optimizer step reads with their moments.
  const int64_t batch = manifest.batchSize, seqLen = manifest.seqLen;
  std::vector<int32_t> tokens(batch * (seqLen + 1));
  int32_t batchRows = int32_t(batch);
  llvm::StringMap<void *> gradArguments, gradResults, stepArguments,
      stepResults;
  gradArguments["tokens"] = tokens.data();
  if (takesBatchRows(gradSpec))
    gradArguments[kBatchRowsArgument] = &batchRows;
  std::vector<std::vector<float>> outputs =
      allocateResults(gradSpec, gradResults);
  std::vector<std::vector<float>> firstMoments, secondMoments;
  for (size_t i = 0; i < weights->size(); ++i) {
    const ManifestParameter &param = manifest.parameters[i];
    gradArguments[param.name] = (*weights)[i].data();
    if (!param.auxRouter)
      continue;
    firstMoments.emplace_back(param.numElements(), 0.0f);
    secondMoments.emplace_back(param.numElements(), 0.0f);
    stepArguments[param.name] = stepResults[param.name] = (*weights)[i].data();
    auto grad = gradResults.find("grad." + param.name);
    if (grad == gradResults.end())
      return auxError("the grad_aux entry point lacks grad." + param.name);
    stepArguments["grad." + param.name] = grad->second;
    stepArguments["optim.m." + param.name] =
        stepResults["optim.m." + param.name] = firstMoments.back().data();
    stepArguments["optim.v." + param.name] =
        stepResults["optim.v." + param.name] = secondMoments.back().data();
  }
  std::vector<float> schedule(3), gradNorm(1);
  stepArguments["schedule"] = schedule.data();
  stepResults["grad_norm"] = gradNorm.data();
  // The frozen model stays on a CUDA artifact's GPU; the routers, their
  // gradients and moments (small) are copied for each call, so that the
  // host checks and saves them as they are.
  if (llvm::Error error = weights->keepOnDevice(
          *artifact,
          [](const ManifestParameter &param) { return !param.auxRouter; }))
    return error;
  auto gradBuffers = bindByName(gradSpec, gradArguments, gradResults);
  if (!gradBuffers)
    return gradBuffers.takeError();
  auto stepBuffers = bindByName(*stepEntry->first, stepArguments, stepResults);
  if (!stepBuffers)
    return stepBuffers.takeError();

  // The routers, in the order the grad entry point reports them.
  struct Router {
    std::string name;
    const float *bce, *confusion;
  };
  std::vector<Router> routers;
  for (auto [spec, buffer] : llvm::zip(gradSpec.results, outputs)) {
    if (!llvm::StringRef(spec.name).starts_with("bce."))
      continue;
    std::string router = spec.name.substr(4);
    void *confusion = gradResults.lookup("confusion." + router);
    if (!confusion)
      return auxError("the grad_aux entry point lacks confusion." + router);
    routers.push_back({router, buffer.data(),
                       static_cast<const float *>(confusion)});
  }
  // The gradients the optimizer reads, checked before each update.
  std::vector<std::pair<std::string, const std::vector<float> *>> gradients;
  for (auto [spec, buffer] : llvm::zip(gradSpec.results, outputs))
    if (llvm::StringRef(spec.name).starts_with("grad."))
      gradients.push_back({spec.name, &buffer});
  std::string weightsPath = options.runDirectory + "/weights.safetensors";
  auto saveWeights = [&](int64_t steps) {
    return weights->save(weightsPath,
                         {{"model", manifest.model},
                          {"aux_steps", std::to_string(steps)},
                          {"trained_from", options.weights}});
  };

  std::string metricsPath = options.runDirectory + "/metrics.jsonl";
  std::error_code ec;
  llvm::raw_fd_ostream metrics(metricsPath, ec);
  if (ec)
    return auxError(metricsPath + ": " + ec.message());
  // The schedule of train.* over this run's steps: warm-up for a tenth of
  // them at most (train.warmup_steps if fewer), then the decay to min_lr.
  TrainConfig hyper = config.train;
  hyper.totalSteps = options.steps;
  hyper.warmupSteps = std::min(hyper.warmupSteps, options.steps / 10);
  auto start = std::chrono::steady_clock::now();
  for (int64_t step = 1; step <= options.steps; ++step) {
    auto stepStart = std::chrono::steady_clock::now();
    if (llvm::Error error = stream->next(batch, tokens))
      return error;
    if (llvm::Error error = gradEntry->second(gradBuffers->data()))
      return error;
    const float auxLoss = outputs[0][0];
    std::string nonFinite;
    if (!std::isfinite(auxLoss))
      nonFinite = llvm::formatv("the loss is {0}", auxLoss).str();
    for (const auto &[name, values] : gradients)
      if (nonFinite.empty() &&
          !llvm::all_of(*values, [](float g) { return std::isfinite(g); }))
        nonFinite = name + " is not finite";
    if (!nonFinite.empty()) {
      // Keep what the steps before it trained.
      if (llvm::Error error = saveWeights(step - 1))
        return error;
      return auxError(llvm::formatv(
          "step {0}: {1}; stopped before updating, {2} holds the weights "
          "after step {3}",
          step, nonFinite, weightsPath, step - 1));
    }
    double lr = learningRate(hyper, step);
    schedule = {float(lr), float(1 - std::pow(hyper.beta1, double(step))),
                float(1 - std::pow(hyper.beta2, double(step)))};
    if (llvm::Error error = stepEntry->second(stepBuffers->data()))
      return error;
    double seconds = std::chrono::duration<double>(
                         std::chrono::steady_clock::now() - stepStart)
                         .count();

    llvm::json::Object line{{"step", step},
                            {"aux_loss", jsonNumber(auxLoss)},
                            {"lr", lr},
                            {"grad_norm", jsonNumber(gradNorm[0])},
                            {"tokens_per_s", double(batch * seqLen) / seconds}};
    double accuracySum = 0;
    for (const Router &router : routers) {
      // [true positives, predicted positives, chosen, decisions]
      const float *c = router.confusion;
      double correct = c[3] - c[1] - c[2] + 2 * c[0];
      double accuracy = ratio(correct, c[3]);
      accuracySum += accuracy;
      line["bce." + router.name] = jsonNumber(*router.bce);
      line["accuracy." + router.name] = accuracy;
      line["precision." + router.name] = ratio(c[0], c[1]);
      line["recall." + router.name] = ratio(c[0], c[2]);
    }
    metrics << llvm::formatv("{0}", llvm::json::Value(std::move(line)))
            << "\n";
    metrics.flush();
    if (metrics.has_error()) {
      std::string message = metrics.error().message();
      metrics.clear_error();
      return auxError(metricsPath + ": " + message);
    }
    if (step % options.logEvery == 0 || step == options.steps)
      llvm::outs() << llvm::formatv(
          "aux step {0}/{1} loss {2:F4} | mean accuracy {3:F3} over {4} "
          "routers | lr {5:e2}\n",
          step, options.steps, auxLoss,
          routers.empty() ? 0.0 : accuracySum / double(routers.size()),
          routers.size(), lr);
  }
  if (llvm::Error error = saveWeights(options.steps))
    return error;
  double seconds = std::chrono::duration<double>(
                       std::chrono::steady_clock::now() - start)
                       .count();
  llvm::outs() << llvm::formatv("trained {0} auxiliary routers for {1} steps "
                                "in {2:F1} s; wrote {3}\n",
                                routers.size(), options.steps, seconds,
                                weightsPath);
  return llvm::Error::success();
}
