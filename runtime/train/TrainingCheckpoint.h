//===- TrainingCheckpoint.h - Reading back a run's training state -*- C++ -*-===//
//
// A run directory holds its last checkpoint in one of two forms:
// - RUN/checkpoint.safetensors (one rank, MODEL_SPEC section 8: the
//   parameters by name, optim.m.<name> and optim.v.<name>);
// - a shard set, RUN/checkpoint.shard-<r>-of-<R>.safetensors for r < R,
//   written by `mpirun -np R momarun train` (runtime/fsdp): each rank's
//   shards of every FSDP unit (fsdp.<unit>, fsdp.optim.m.<unit>,
//   fsdp.optim.v.<unit>) and, in the metadata, the unit layout, so that the
//   set can be put back together without the artifact.
// Both carry step, data_position and rng in their metadata. Reading takes
// the form with the most steps by its header, and reads only that one whole
// (an older one if it cannot be read), so a run may resume on any number of
// ranks.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_TRAIN_TRAININGCHECKPOINT_H
#define MOMAC_RUNTIME_TRAIN_TRAININGCHECKPOINT_H

#include "lib/artifact/Manifest.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace momac {

/// The metadata every momarun checkpoint has.
struct CheckpointProgress {
  /// Steps completed.
  int64_t step = 0;
  /// Sequences consumed.
  uint64_t dataPosition = 0;
  /// The router-noise generator's state (rngState), or "none".
  std::string rng = "none";
  std::string model;
};

/// The text form of the router-noise generator's state that checkpoints
/// keep; "none" without router noise (a run without moe.gumbel draws no
/// random numbers).
std::string rngState(const std::mt19937_64 *rng);

struct TrainingState : CheckpointProgress {
  /// In the order of `parameters`; moments empty for aux routers.
  std::vector<ManifestParameter> parameters;
  std::vector<std::vector<float>> weights, firstMoments, secondMoments;
  /// What was read, for messages.
  std::string source;
};

/// One rank's shards of a unit (ShardUnits.h), as a shard set stores them.
struct UnitShards {
  llvm::ArrayRef<float> params, firstMoments, secondMoments;
};

std::string singleCheckpointPath(llvm::StringRef runDirectory);
std::string shardCheckpointPath(llvm::StringRef runDirectory, int rank,
                                int ranks);

/// The latest checkpoint of `runDirectory`, either form, with the
/// parameters of `parameters` (a missing or misshapen one is an error); an
/// empty `parameters` takes those the checkpoint has (a shard set's
/// layout; consolidation).
llvm::Expected<TrainingState>
readTrainingCheckpoint(llvm::StringRef runDirectory,
                       const std::vector<ManifestParameter> &parameters = {});

/// What readTrainingCheckpointEach hands over, parameter by parameter:
/// its index in the state's `parameters`, its values and its moments
/// (empty for aux routers), which the callee may move from.
using TakeParameter = llvm::function_ref<void(
    size_t, std::vector<float> &, std::vector<float> &, std::vector<float> &)>;

/// readTrainingCheckpoint, one parameter at a time, so that a rank of a
/// sharded run keeps its shard of each and never holds the whole state
/// (a shard set is put back together one FSDP unit at a time). The
/// returned state has the progress, the parameters and the source, no
/// tensors. When the newest form fails partway, an older one is read
/// again from its first parameter.
llvm::Expected<TrainingState>
readTrainingCheckpointEach(llvm::StringRef runDirectory,
                           const std::vector<ManifestParameter> &parameters,
                           TakeParameter take);

/// The data_position and step of a momarun checkpoint (stage 2 of an
/// upcycling starts where stage 1's data stopped).
llvm::Expected<std::pair<uint64_t, int64_t>>
readDataPosition(llvm::StringRef checkpoint);

/// Writes one MODEL_SPEC checkpoint (atomically): each parameter under its
/// name, the AdamW moments of those that are not aux routers, `progress`.
llvm::Error
writeSingleCheckpoint(llvm::StringRef path,
                      llvm::ArrayRef<ManifestParameter> parameters,
                      const std::vector<std::vector<float>> &weights,
                      const std::vector<std::vector<float>> &firstMoments,
                      const std::vector<std::vector<float>> &secondMoments,
                      const CheckpointProgress &progress);

/// Writes rank `rank`'s file of a shard set of `ranks` (atomically): its
/// shards of each of `manifest`'s units, in manifest order, and the unit
/// layout that reading the set back needs.
llvm::Error writeShardCheckpoint(llvm::StringRef runDirectory, int rank,
                                 int ranks, const Manifest &manifest,
                                 llvm::ArrayRef<UnitShards> shards,
                                 const CheckpointProgress &progress);

/// Removes the checkpoint files of `runDirectory` other than `keep` (the
/// forms and shard sets an earlier run with another rank count left).
void removeOtherCheckpoints(llvm::StringRef runDirectory,
                            const std::vector<std::string> &keep);

} // namespace momac

#endif // MOMAC_RUNTIME_TRAIN_TRAININGCHECKPOINT_H
