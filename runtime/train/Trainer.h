//===- Trainer.h - The training loop of momarun -----------------*- C++ -*-===//
//
// Runs MODEL_SPEC section 7 steps with an artifact's compiled entry points:
// @grad for each micro-batch, then @optimizer_step (clipping and AdamW) on
// the mean gradient. The runtime owns the buffers, the data position, the
// learning-rate schedule's scalars, metrics and checkpoints; the tensor math
// is the artifact's.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_TRAIN_TRAINER_H
#define MOMAC_RUNTIME_TRAIN_TRAINER_H

#include "lib/config/ModelConfig.h"

#include "llvm/Support/Error.h"
#include "llvm/Support/JSON.h"

#include <optional>
#include <string>

namespace momac {

struct TrainOptions {
  std::string artifact;
  std::string dataPrefix;
  std::string runDirectory;
  /// Weights to start from; empty: momarun's init with `seed`.
  std::string initWeights;
  /// A checkpoint whose data_position the data stream starts at (stage 2
  /// of upcycling continues stage 1's data); empty: the start. Steps,
  /// optimizer and schedule start fresh.
  std::string dataPositionFrom;
  /// Seeds the initial weights and the router-noise stream; unset: the
  /// model's train.seed.
  std::optional<uint64_t> seed;
  int64_t steps = 0;
  bool resume = false;
  /// Write RUN/checkpoint.safetensors every this many steps (and at the end).
  int64_t checkpointEvery = 100;
  /// Without a terminal, print a progress line every this many steps.
  int64_t logEvery = 10;
  /// A step whose loss or gradient is not finite stops training with an
  /// error naming the step, after checkpointing the (finite) state from
  /// before it, unless fewer than this many such steps have been skipped:
  /// then its update is skipped instead, and logged (Megatron's skipped
  /// iterations). metrics.jsonl writes non-finite numbers as null.
  int64_t skipNonFinite = 0;
  /// On several ranks: deal each step's sequences so that every rank's
  /// modality mix stays near the model's expert mix (ModalityBalance.h).
  bool balanceModalities = false;
  /// Refuse to start when the training state (weights, gradients, AdamW
  /// moments) would not fit in this many bytes; 0: physical memory.
  int64_t memoryLimitBytes = 0;
};

/// A metric as JSON: the number, or null when it is NaN or infinite, which
/// JSON cannot write (llvm::json would print a bare `nan`).
llvm::json::Value jsonNumber(double value);

/// What a step whose loss or gradient is not finite (`what` says which)
/// leaves behind, the same on one rank and on several
/// (TrainOptions::skipNonFinite): its metrics.jsonl line, without a
/// gradient norm;
llvm::json::Object nonFiniteStepLine(int64_t step, double loss, double lr,
                                     bool skipped);
/// the error that stops the run, `lastCheckpoint` (0: none) holding the last
/// good state in `checkpointForm` ("RUN/checkpoint.safetensors");
std::string nonFiniteStopMessage(int64_t step, llvm::StringRef what,
                                 int64_t lastCheckpoint,
                                 llvm::StringRef checkpointForm);
/// and the warning printed when its update is skipped instead.
void warnNonFiniteSkipped(int64_t step, llvm::StringRef what,
                          int64_t skippedSteps, int64_t allowed);

/// lr(t) of MODEL_SPEC section 7 for step t >= 1.
double learningRate(const TrainConfig &train, int64_t step);

llvm::Error train(const TrainOptions &options);

/// Keeps the metrics of steps 1..lastStep in metrics.jsonl at `path` (a
/// resumed run rewrites the rest).
llvm::Error truncateMetrics(llvm::StringRef path, int64_t lastStep);

} // namespace momac

#endif // MOMAC_RUNTIME_TRAIN_TRAINER_H
