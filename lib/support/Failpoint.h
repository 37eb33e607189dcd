//===- Failpoint.h - Named points where a test can kill the process -*- C++ -*-===//
//
// In the style of FoundationDB's and TiKV's failpoints: MOMA_FAILPOINT names
// a point in the code, and the process is killed there (SIGKILL: no
// destructor, no flush, no cleanup, as a power cut or kill -9 would), so
// that tests can crash a run at every step of a protocol and check what
// survives (test/e2e/test_reliability.py kills checkpointing at each point on each
// rank and resumes).
//
//   MOMA_FAILPOINT=NAME[@RANK][#HIT]
//
// fires at point NAME on rank RANK (default: any) the HIT-th time it is
// reached (default: the first). Without the variable a failpoint costs one
// branch.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_LIB_SUPPORT_FAILPOINT_H
#define MOMAC_LIB_SUPPORT_FAILPOINT_H

#include "llvm/ADT/StringRef.h"

namespace momac {

/// The points (their names, for MOMA_FAILPOINT).
namespace failpoints {
/// Inside a checkpoint file's data, half of it written.
inline constexpr llvm::StringLiteral kMidDataWrite = "checkpoint-mid-data-write";
/// A checkpoint file complete in its temporary, before it takes its name.
inline constexpr llvm::StringLiteral kBeforeRename = "checkpoint-before-rename";
/// A rank's shard renamed, before the ranks meet: some ranks' shards of the
/// new set are in place, others not.
inline constexpr llvm::StringLiteral kBetweenRenames =
    "checkpoint-between-renames";
/// Every shard in place, before rank 0 commits the set.
inline constexpr llvm::StringLiteral kBeforeSetManifest =
    "checkpoint-before-set-manifest";
/// The set committed (its manifest renamed), before the older sets' files
/// are removed.
inline constexpr llvm::StringLiteral kAfterSetManifest =
    "checkpoint-after-set-manifest";
} // namespace failpoints

/// Kills the process when MOMA_FAILPOINT names `point` (and `rank`, and this
/// is the chosen hit). `rank` -1: a point not tied to a rank.
void failpoint(llvm::StringRef point, int rank = -1);

/// The rank failpoints reached without one (inside a file writer) use.
void setFailpointRank(int rank);

} // namespace momac

#endif // MOMAC_LIB_SUPPORT_FAILPOINT_H
