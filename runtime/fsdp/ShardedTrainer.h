//===- ShardedTrainer.h - One model trained across ranks (FSDP) -*- C++ -*-===//
//
// `mpirun -np R momarun train ART ...` with an artifact compiled with
// `momac --fsdp`: every rank holds 1/R of each FSDP unit's parameters,
// gradients and AdamW moments. The compiled fsdp_grad gathers each unit
// around its use and reduce-scatters its gradients through the callbacks
// installed here (FsdpAbi.h); clipping uses the global norm from an
// all-reduce of the shards' squared norms; AdamW (fsdp_adamw_*) updates the
// local shard only.
//
// Step t takes the next R * M * B sequences; rank r the r-th M * B of them
// (MODEL_SPEC section 8), so R ranks reproduce the losses of one rank
// running R * M micro-batches. With balanceModalities, sequences are dealt
// to ranks so that each rank's text:image token ratio stays near the
// model's text:image expert ratio (the paper's fix for stragglers).
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_FSDP_SHARDEDTRAINER_H
#define MOMAC_RUNTIME_FSDP_SHARDEDTRAINER_H

#include "runtime/comm/Communicator.h"
#include "runtime/train/Trainer.h"

namespace momac {

llvm::Error trainSharded(const TrainOptions &options, Communicator &comm);

/// An error every rank reached together, on the same all-reduced values (a
/// non-finite step): the ranks stop in step, so none needs to abort the
/// others, and one message (rank 0's) says why.
class CollectiveStop : public llvm::ErrorInfo<CollectiveStop> {
public:
  static char ID;
  explicit CollectiveStop(std::string text) : text(std::move(text)) {}
  void log(llvm::raw_ostream &os) const override { os << text; }
  std::error_code convertToErrorCode() const override {
    return llvm::inconvertibleErrorCode();
  }

private:
  std::string text;
};

} // namespace momac

#endif // MOMAC_RUNTIME_FSDP_SHARDEDTRAINER_H
