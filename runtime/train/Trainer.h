//===- Trainer.h - Training with momarun -------------------------*- C++ -*-===//
//
// Runs MODEL_SPEC section 7 steps with an artifact's compiled entry points:
// @grad for each micro-batch, then @optimizer_step (clipping and AdamW) on
// the mean gradient. The runtime owns the buffers, the data position, the
// learning-rate schedule's scalars, metrics and checkpoints (TrainLoop.h);
// the tensor math is the artifact's. TrainOptions are those of every
// trainer; one rank runs train(), several trainSharded (runtime/fsdp).
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_TRAIN_TRAINER_H
#define MOMAC_RUNTIME_TRAIN_TRAINER_H

#include "lib/config/ModelConfig.h"

#include "llvm/Support/Error.h"

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
  /// Resume even when the run's sequences per step differ from the
  /// checkpoint's (another rank count or train.micro_batches).
  bool allowBatchChange = false;
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

/// Trains on one rank (TrainLoop.h: the loop; Trainer.cpp: the step).
llvm::Error train(const TrainOptions &options);

} // namespace momac

#endif // MOMAC_RUNTIME_TRAIN_TRAINER_H
