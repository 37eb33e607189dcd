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

} // namespace momac

#endif // MOMAC_RUNTIME_FSDP_SHARDEDTRAINER_H
