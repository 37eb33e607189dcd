//===- ShardUnits.h - How FSDP groups and splits the parameters -*- C++ -*-===//
//
// Fully sharded data parallelism communicates whole units, not single
// tensors (PyTorch FSDP's flat parameters, Megatron's buckets): one unit per
// transformer layer (`layers.N.*`) and one per other parameter (the
// embedding, the final norm, the output projection). A unit's parameters lie
// one after another in a flat f32 buffer, each starting at a multiple of
// kShardAlignment elements; with R ranks the flat buffer, zero-padded to R
// equal shards, is split in R contiguous pieces and rank r keeps the r-th.
//
// The compiler (which calls gather and reduce-scatter per unit), the
// manifest and the runtime (which owns the shards) all use this one layout.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_LIB_CONFIG_SHARDUNITS_H
#define MOMAC_LIB_CONFIG_SHARDUNITS_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"

#include <cstdint>
#include <string>
#include <vector>

namespace momac {

/// Offsets and shard sizes are multiples of this many elements (64 bytes),
/// so that every gathered parameter starts on a cache line.
constexpr int64_t kShardAlignment = 16;

struct ShardUnit {
  std::string name;
  /// Indices into the parameter list the units were planned from.
  std::vector<int64_t> parameters;
  /// Where each of them starts in the unit's flat buffer (elements).
  std::vector<int64_t> offsets;
  /// The flat buffer's length (elements), alignment padding included.
  int64_t elements = 0;

  /// The elements one of `ranks` ranks holds (shardElements below).
  int64_t shardElements(int64_t ranks) const;
};

/// The elements each of `ranks` ranks holds of a unit of `elements`:
/// ceil(elements / ranks), rounded up to kShardAlignment.
int64_t shardElements(int64_t elements, int64_t ranks);

/// The unit a parameter belongs to: "layers.N" for a layer's parameters,
/// else the parameter's own name.
std::string shardUnitName(llvm::StringRef parameter);

/// Units in order of their first parameter; `parameters` gives each
/// parameter's name and element count, in manifest order.
std::vector<ShardUnit> planShardUnits(
    llvm::ArrayRef<std::pair<std::string, int64_t>> parameters);

} // namespace momac

#endif // MOMAC_LIB_CONFIG_SHARDUNITS_H
