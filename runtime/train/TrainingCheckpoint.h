//===- TrainingCheckpoint.h - A run's training state on disk ----*- C++ -*-===//
//
// A run directory holds its last checkpoint in one of two forms:
//
// - RUN/checkpoint.safetensors (one rank, MODEL_SPEC section 8: the
//   parameters by name, optim.m.<name> and optim.v.<name>), replaced
//   atomically;
// - a committed shard set of R ranks: each rank's file
//   RUN/checkpoint.step-<S>.shard-<r>-of-<R>.safetensors (its shards of every
//   FSDP unit, fsdp.<unit>, fsdp.optim.m.<unit>, fsdp.optim.v.<unit>, and the
//   unit layout in its metadata, so that the set can be put back together
//   without the artifact), and RUN/checkpoint.shards.json, which rank 0
//   writes last, atomically, naming every file of the set with its size and
//   checksum. Only the set it names is a checkpoint: a crash at any moment
//   leaves the previous committed set (whose files have other names) or the
//   new one, never a mixture (the failpoint test kills each step of this on
//   each rank).
//
// Every file carries its tensors' checksums (safetensors kChecksumsKey) and
// step, data_position, rng, model and global_batch in its metadata. Reading
// checks every field before using it (steps and positions non-negative and
// equal across a set, each file's rank and size against its name and the
// set, the layout's offsets against its units, each tensor's checksum): a
// mismatch is one line naming the file and the field. It takes the form
// with the most steps, and only that one whole (an older one if it cannot be
// read), so a run may resume on any number of ranks.
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
  /// Sequences per step of the run that wrote it (ranks x micro-batches x
  /// batch size); 0 when unknown (older checkpoints).
  int64_t globalBatch = 0;
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
/// Rank `rank`'s file of the shard set of step `step` over `ranks` ranks.
std::string shardCheckpointPath(llvm::StringRef runDirectory, int64_t step,
                                int rank, int ranks);
/// The committed set's manifest, RUN/checkpoint.shards.json.
std::string shardSetPath(llvm::StringRef runDirectory);

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
/// tensors. Everything is validated before the first `take`; when the
/// newest form fails, an older one is read instead.
llvm::Expected<TrainingState>
readTrainingCheckpointEach(llvm::StringRef runDirectory,
                           const std::vector<ManifestParameter> &parameters,
                           TakeParameter take);

/// Refuses to resume `state` with another number of sequences per step
/// than the run that wrote it (`globalBatch`, made of `how`: "2 ranks x 1
/// micro-batch x 4 sequences"), which would change the effective batch and
/// the loss curve, unless `allowed` (--allow-batch-change).
llvm::Error checkResumedBatch(const CheckpointProgress &state,
                              int64_t globalBatch, llvm::StringRef how,
                              bool allowed, llvm::StringRef source);

/// The data_position and step of a momarun checkpoint (stage 2 of an
/// upcycling starts where stage 1's data stopped).
llvm::Expected<std::pair<uint64_t, int64_t>>
readDataPosition(llvm::StringRef checkpoint);

/// Writes one MODEL_SPEC checkpoint (atomically, checksummed): each
/// parameter under its name, the AdamW moments of those that are not aux
/// routers, `progress`.
llvm::Error
writeSingleCheckpoint(llvm::StringRef path,
                      llvm::ArrayRef<ManifestParameter> parameters,
                      const std::vector<std::vector<float>> &weights,
                      const std::vector<std::vector<float>> &firstMoments,
                      const std::vector<std::vector<float>> &secondMoments,
                      const CheckpointProgress &progress);

/// A file of a shard set as its manifest records it.
struct ShardFile {
  std::string name; // in the run directory
  uint64_t bytes = 0;
  uint64_t xxh3 = 0;
};

/// Writes rank `rank`'s file of the set of step `progress.step` over
/// `ranks` (synced, under its own name): its shards of each of `manifest`'s
/// units, in manifest order, and the unit layout that reading the set back
/// needs. Nothing is committed yet: commitShardSet does, once every rank's
/// file is in place.
llvm::Expected<ShardFile>
writeShardCheckpoint(llvm::StringRef runDirectory, int rank, int ranks,
                     const Manifest &manifest,
                     llvm::ArrayRef<UnitShards> shards,
                     const CheckpointProgress &progress);

/// Commits the set of step `step` (rank 0, after every rank wrote its
/// file): RUN/checkpoint.shards.json is replaced atomically by one naming
/// `files`; then the files of older sets and the one-rank form go.
llvm::Error commitShardSet(llvm::StringRef runDirectory, int64_t step,
                           const std::vector<ShardFile> &files);

/// Removes every shard set of `runDirectory` (its manifest first): after a
/// one-rank checkpoint, they are older.
void removeShardSets(llvm::StringRef runDirectory);

/// Removes the temporaries of checkpoint writes a crash interrupted
/// (checkpoint.*.tmp-*); returns how many. A run calls it before its first
/// checkpoint (on several ranks, rank 0 alone).
unsigned removeInterruptedCheckpointWrites(llvm::StringRef runDirectory);

} // namespace momac

#endif // MOMAC_RUNTIME_TRAIN_TRAININGCHECKPOINT_H
