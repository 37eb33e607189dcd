//===- TrainLoop.cpp - The training loop every trainer shares -------------===//

#include "runtime/train/TrainLoop.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>
#include <cmath>

using namespace momac;

namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string formatDuration(double seconds) {
  int64_t s = int64_t(seconds + 0.5);
  return llvm::formatv("{0}:{1:2}:{2:2}", s / 3600, (s / 60) % 60, s % 60)
      .str();
}

/// The metrics line of a step whose loss or gradient is not finite: no
/// gradient norm, and whether its update was skipped.
llvm::json::Object nonFiniteStepLine(int64_t step, llvm::StringRef lossName,
                                     double loss, double lr, bool skipped) {
  return llvm::json::Object{{"step", step},
                            {lossName, jsonNumber(loss)},
                            {"lr", lr},
                            {"grad_norm", nullptr},
                            {"skipped", skipped}};
}

/// The error that stops the run, `lastCheckpoint` (0: none) holding the last
/// good state in `checkpointName`.
std::string nonFiniteStopMessage(int64_t step, llvm::StringRef what,
                                 int64_t lastCheckpoint,
                                 llvm::StringRef checkpointName) {
  return llvm::formatv(
             "step {0}: {1}; stopped without updating the weights ({2}; "
             "--skip-nonfinite N skips up to N such steps)",
             step, what,
             lastCheckpoint
                 ? llvm::formatv("{0} holds step {1}, the last good state",
                                 checkpointName, lastCheckpoint)
                       .str()
                 : std::string("no step completed, no checkpoint"))
      .str();
}

/// The progress of one step: a bar redrawn in place on a terminal,
/// otherwise a line every `logEvery` steps.
void printProgress(const TrainLoopOptions &options, int64_t step,
                   llvm::StringRef lossName, const StepOutcome &outcome,
                   double lr, double tokensPerSecond, double elapsed,
                   bool terminal) {
  const int64_t lastStep = options.firstStep + options.steps - 1;
  const int64_t done = step - options.firstStep + 1;
  double eta = elapsed / double(done) * double(lastStep - step);
  std::string line =
      llvm::formatv("step {0}/{1} {2} {3:F4}{4} | lr {5:e2} | {6:F0} tok/s | "
                    "ETA {7}",
                    step, lastStep, lossName, outcome.loss, outcome.progress, lr, tokensPerSecond,
                    formatDuration(eta));
  if (terminal) {
    int64_t filled = done * 20 / options.steps;
    llvm::outs() << "\r[" << std::string(filled, '=')
                 << std::string(20 - filled, ' ') << "] " << line << "\x1b[K";
    if (step == lastStep)
      llvm::outs() << "\n";
  } else if (done % options.logEvery == 0 || done == 1 || step == lastStep) {
    llvm::outs() << line << "\n";
  }
  llvm::outs().flush();
}

} // namespace

TrainStep::~TrainStep() = default;

llvm::Error TrainStep::stop(const std::string &message) const {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

void momac::modalityMetrics(const ModelConfig &config,
                            llvm::ArrayRef<double> sums,
                            llvm::ArrayRef<uint64_t> counts,
                            StepOutcome &outcome) {
  for (auto [m, modality] : llvm::enumerate(config.modalities)) {
    outcome.metrics["targets." + modality.name] = int64_t(counts[m]);
    if (!counts[m]) {
      outcome.metrics["loss." + modality.name] = nullptr;
      outcome.progress += llvm::formatv(" {0} -", modality.name);
      continue;
    }
    double value = sums[m] / double(counts[m]);
    outcome.metrics["loss." + modality.name] = jsonNumber(value);
    outcome.progress += llvm::formatv(" {0} {1:F4}", modality.name, value);
  }
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

std::array<float, 3> momac::adamwSchedule(const TrainConfig &train,
                                          double lr, int64_t step) {
  return {float(lr), float(1 - std::pow(train.beta1, double(step))),
          float(1 - std::pow(train.beta2, double(step)))};
}

llvm::Error momac::runTrainLoop(TrainStep &step, MetricsLog &metrics,
                                const TrainLoopOptions &options) {
  const bool terminal =
      options.leader && options.redrawOnTerminal &&
      llvm::sys::Process::StandardOutIsDisplayed();
  const int64_t lastStep = options.firstStep + options.steps - 1;
  int64_t skipped = 0, lastCheckpoint = options.lastCheckpoint;
  const Clock::time_point runStart = Clock::now();
  for (int64_t t = options.firstStep; t <= lastStep; ++t) {
    const Clock::time_point stepStart = Clock::now();
    const double lr = learningRate(options.schedule, t);
    llvm::Expected<StepOutcome> outcome = step.run(t, lr);
    if (!outcome)
      return outcome.takeError();
    // A non-finite loss or gradient would turn every weight into NaN
    // through the clipping scale: the step changed nothing, and the run
    // stops (keeping the state from before the step) or skips it.
    const bool finite = outcome->nonFinite.empty();
    if (!finite) {
      const bool skip = skipped < options.skipNonFinite;
      if (llvm::Error error = metrics.write(nonFiniteStepLine(
              t, step.lossName(), outcome->loss, lr, skip)))
        return error;
      if (!skip) {
        if (lastCheckpoint < t - 1) {
          step.rewind();
          if (llvm::Error error = step.checkpoint(t - 1))
            return error;
          lastCheckpoint = t - 1;
        }
        return step.stop(nonFiniteStopMessage(t, outcome->nonFinite,
                                              lastCheckpoint,
                                              step.checkpointName()));
      }
      ++skipped;
      if (options.leader)
        llvm::errs() << llvm::formatv(
            "momarun: warning: step {0}: {1}; update skipped ({2} of "
            "--skip-nonfinite {3})\n",
            t, outcome->nonFinite, skipped, options.skipNonFinite);
    }
    const double stepSeconds = secondsSince(stepStart);
    const double tokensPerSecond = double(step.tokensPerStep()) / stepSeconds;
    if (finite) {
      llvm::json::Object line{{"step", t},
                              {step.lossName(), jsonNumber(outcome->loss)},
                              {"lr", lr},
                              {"grad_norm", jsonNumber(outcome->gradNorm)},
                              {"tokens_per_s", jsonNumber(tokensPerSecond)}};
      for (auto &[key, value] : outcome->metrics)
        line[key] = std::move(value);
      if (llvm::Error error = metrics.write(std::move(line)))
        return error;
    }
    if ((t - options.firstStep + 1) % options.checkpointEvery == 0 ||
        t == lastStep) {
      if (llvm::Error error = step.checkpoint(t))
        return error;
      lastCheckpoint = t;
    }
    if (options.leader)
      printProgress(options, t, step.lossName(), *outcome, lr,
                    tokensPerSecond, secondsSince(runStart), terminal);
  }
  return llvm::Error::success();
}
