//===- AuxRouterTrainer.h - Training the auxiliary routers -------*- C++ -*-===//
//
// MODEL_SPEC section 6: after the main model, its auxiliary routers learn to
// predict the batch routers' top-k choices from one token's hidden state, by
// binary cross-entropy, with the main model frozen. momarun train-aux runs
// the compiled @grad_aux and @optimizer_step_aux (AdamW on the auxiliary
// routers only, train.* hyperparameters, no weight decay), with the LR
// schedule of train.* stretched over the run's --steps (warm-up: at most a
// tenth of them).
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_TRAIN_AUXROUTERTRAINER_H
#define MOMAC_RUNTIME_TRAIN_AUXROUTERTRAINER_H

#include "llvm/Support/Error.h"

#include <cstdint>
#include <string>

namespace momac {

struct AuxTrainOptions {
  std::string artifact;
  /// The trained model (weights or a checkpoint); its aux routers are where
  /// training starts.
  std::string weights;
  std::string dataPrefix;
  std::string runDirectory;
  int64_t steps = 0;
  int64_t logEvery = 10;
  /// Non-finite steps whose update is skipped before one stops the run
  /// (as train's --skip-nonfinite).
  int64_t skipNonFinite = 0;
};

/// Trains the auxiliary routers for `steps` steps of train.batch_size
/// sequences (one micro-batch each), writing RUN/metrics.jsonl (per step:
/// aux_loss, lr, grad_norm and, per router, bce, accuracy, precision and
/// recall of the 0.5 threshold against the batch choice) and
/// RUN/weights.safetensors (the model with its trained aux routers).
llvm::Error trainAuxRouters(const AuxTrainOptions &options);

} // namespace momac

#endif // MOMAC_RUNTIME_TRAIN_AUXROUTERTRAINER_H
