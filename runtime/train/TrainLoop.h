//===- TrainLoop.h - The training loop every trainer shares -----*- C++ -*-===//
//
// As torchtitan's Trainer with its checkpoint and metrics components, the
// loop owns what every kind of training is the same in: the learning-rate
// schedule (MODEL_SPEC section 7), the non-finite policy (stop, after
// checkpointing the state from before the step, or skip up to N updates),
// the checkpoint cadence, the metrics log and the progress line. What a step
// is (its micro-batches, gradient and update, where its state lives, how it
// is checkpointed) is a TrainStep, with three implementations:
//
// - one rank (Trainer.cpp),
// - FSDP over ranks (runtime/fsdp/ShardedTrainer.cpp),
// - the auxiliary routers of a frozen model (AuxRouterTrainer.cpp).
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_TRAIN_TRAINLOOP_H
#define MOMAC_RUNTIME_TRAIN_TRAINLOOP_H

#include "lib/config/ModelConfig.h"
#include "runtime/train/RunRecord.h"

#include "llvm/Support/Error.h"
#include "llvm/Support/JSON.h"

#include <array>
#include <cstdint>
#include <string>

namespace momac {

/// What one step did.
struct StepOutcome {
  double loss = 0;
  double gradNorm = 0;
  /// Why the loss or the gradient is not finite ("the loss is nan"); empty
  /// when both are. A step that is not finite has changed no weight.
  std::string nonFinite;
  /// The step's own fields of its metrics line (per-modality losses, the
  /// ranks' times, the routers' accuracies).
  llvm::json::Object metrics;
  /// What the progress line says after the loss.
  std::string progress;
};

class TrainStep {
public:
  virtual ~TrainStep();

  /// Runs step `step` (counted from 1 over the whole run, resumed or not)
  /// at learning rate `lr`: its micro-batches, its gradient and, when the
  /// loss and the gradient are finite, the update.
  virtual llvm::Expected<StepOutcome> run(int64_t step, double lr) = 0;
  /// Writes the state after `completed` steps where the run keeps it.
  virtual llvm::Error checkpoint(int64_t completed) = 0;
  /// Puts the data position and the router-noise stream back where the
  /// last step began, so that a checkpoint taken now resumes at that step
  /// (the weights are still those from before it).
  virtual void rewind() = 0;
  virtual int64_t tokensPerStep() const = 0;
  /// Where the checkpoint is, for messages ("RUN/checkpoint.safetensors").
  virtual std::string checkpointName() const = 0;
  /// The error that ends the run on a non-finite step; on several ranks one
  /// they all reach together.
  virtual llvm::Error stop(const std::string &message) const;
  /// The metrics' name of the loss.
  virtual llvm::StringRef lossName() const { return "loss"; }
};

struct TrainLoopOptions {
  /// train.*: the schedule's lr, min_lr, warm-up and total steps.
  TrainConfig schedule;
  int64_t firstStep = 1;
  int64_t steps = 0;
  /// A checkpoint every this many steps, and one after the last.
  int64_t checkpointEvery = 100;
  /// Off a terminal, a progress line every this many steps (and after the
  /// first and the last).
  int64_t logEvery = 10;
  /// Non-finite steps whose update is skipped before one stops the run.
  int64_t skipNonFinite = 0;
  /// The step the run's latest checkpoint holds (0: none yet).
  int64_t lastCheckpoint = 0;
  /// The rank that writes metrics, progress and warnings (rank 0).
  bool leader = true;
  /// Whether a progress bar may be redrawn in place when standard output is
  /// a terminal. Off under mpirun, which gives every rank a pseudo-terminal
  /// even when its own output goes to a pipe or a file.
  bool redrawOnTerminal = true;
};

/// A step's per-modality losses, pooled over the step's targets of each
/// modality (`sums` of target losses, `counts` of targets), into its
/// metrics (loss.<modality>, null when the step had none of the modality's
/// targets, and targets.<modality>) and its progress text.
void modalityMetrics(const ModelConfig &config,
                     llvm::ArrayRef<double> sums,
                     llvm::ArrayRef<uint64_t> counts, StepOutcome &outcome);

/// Runs `options.steps` steps of `step`, logging each to `metrics`.
llvm::Error runTrainLoop(TrainStep &step, MetricsLog &metrics,
                         const TrainLoopOptions &options);

/// lr(t) of MODEL_SPEC section 7 for step t >= 1.
double learningRate(const TrainConfig &train, int64_t step);

/// AdamW's step scalars for the compiled optimizer step: {lr, 1 - beta1^t,
/// 1 - beta2^t}. (An array: the step binds its buffer once, and assigning
/// one copies into it.)
std::array<float, 3> adamwSchedule(const TrainConfig &train, double lr,
                                   int64_t step);

} // namespace momac

#endif // MOMAC_RUNTIME_TRAIN_TRAINLOOP_H
