//===- ShardedModel.h - One rank's shards of an FSDP model ------*- C++ -*-===//
//
// This rank's piece of every FSDP unit (its parameters, gradients and AdamW
// moments) and the callbacks that the compiled step's gathers and
// reduce-scatters reach (FsdpAbi.h). The shards live where the artifact's
// steps run (runtime/device/Device.h): host memory for a CPU artifact;
// device memory for a CUDA artifact (or its emulation), each shard buffer
// kept there, its host vector current only when a checkpoint asks. The
// units' collectives go over the device's own communicator (NCCL between
// GPUs) or the ranks' (MPI between host buffers).
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_FSDP_SHARDEDMODEL_H
#define MOMAC_RUNTIME_FSDP_SHARDEDMODEL_H

#include "lib/artifact/Manifest.h"
#include "runtime/comm/Communicator.h"
#include "runtime/device/common/FsdpAbi.h"
#include "runtime/device/Device.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace momac {

/// A contiguous range of a rank's shard of one unit that AdamW updates the
/// same way: trained parameters with (or without) weight decay, and the
/// alignment padding between them, which stays zero.
struct OptimizerSegment {
  size_t unit;
  int64_t begin, end; // in the shard
  bool decayed;
};

class ShardedModel {
public:
  struct Shard {
    std::vector<float> params, grads, firstMoments, secondMoments;
    int64_t elements = 0, shardElements = 0, begin = 0;
    /// The padding between the unit's parameters (zeroed before each
    /// reduce-scatter: the compiled step never writes it).
    std::vector<std::pair<int64_t, int64_t>> gaps;
  };

  /// `comm` carries the units' collectives (Device::unitCommunicator).
  ShardedModel(const Manifest &manifest, Device &device, Communicator &comm);

  /// Keeps this rank's slice of parameter `p`'s full tensor `full` in the
  /// shard buffer `member` (params or a moment) of its unit.
  void keepSlice(size_t p, const std::vector<float> &full,
                 std::vector<float> Shard::*member);
  /// The segments of this rank's shards that AdamW updates (not the aux
  /// routers, MODEL_SPEC section 7).
  std::vector<OptimizerSegment> optimizerSegments() const;
  /// The table momart_fsdp_install takes.
  MomartFsdpCallbacks callbacks();
  /// Keeps every shard buffer where the steps run.
  llvm::Error placeShards();
  /// Keeps `buffer` where the steps run (nothing for a CPU artifact).
  llvm::Error keep(std::vector<float> &buffer, const llvm::Twine &what);
  void zeroGradients();
  size_t largestUnitShard() const;

  std::vector<Shard> shards;
  /// Each micro-batch's gradients are added with this weight: 1 / (R M).
  float gradientScale = 1.0f;
  /// Time spent blocked in collectives during the compiled step.
  std::chrono::steady_clock::duration communicationWait{};
  int64_t largestUnit = 0;
  std::string largestUnitName;

private:
  /// A failed collective inside the compiled step cannot return an error:
  /// it ends every rank, naming itself.
  [[noreturn]] void fail(llvm::Error error);
  std::string describe(const char *what, int32_t unit) const;
  void allGatherStart(int32_t unit, float *full);
  void allGatherWait(int32_t unit, float *full);
  void reduceScatter(int32_t unit, float *full);

  const Manifest &manifest;
  Device &device;
  Communicator &comm;
  llvm::StringMap<size_t> parameterIndex;
  /// Each parameter's unit and offset in it, by manifest index.
  std::vector<std::pair<size_t, int64_t>> placement;
  llvm::DenseMap<float *, std::unique_ptr<PendingCollective>> pending;
  std::vector<float> reduced;
};

} // namespace momac

#endif // MOMAC_RUNTIME_FSDP_SHARDEDMODEL_H
