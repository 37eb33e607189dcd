//===- NcclCalls.h - The NCCL functions a CUDA artifact exports -*- C++ -*-===//
//
// NCCL lives in an --fsdp CUDA artifact's model.so
// (runtime/device/cuda/NcclCollectives.cpp, CudaRuntime.h), so that momarun
// needs no CUDA: these are its functions, looked up by the CUDA device
// (runtime/device/cuda/CudaDevice.cpp) and driven by the NCCL communicator.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_COMM_NCCL_NCCLCALLS_H
#define MOMAC_RUNTIME_COMM_NCCL_NCCLCALLS_H

#include <cstdint>

namespace momac {

struct NcclCalls {
  int64_t (*idBytes)();
  bool (*uniqueId)(void *id);
  bool (*init)(const void *id, int32_t rank, int32_t ranks,
               int64_t timeoutMs);
  void (*allGather)(const float *shard, float *full, int64_t shardElements,
                    int64_t total);
  void (*reduceScatter)(const float *full, float *shard,
                        int64_t shardElements, int64_t total);
  void (*destroy)();
  const char *(*takeError)();
};

} // namespace momac

#endif // MOMAC_RUNTIME_COMM_NCCL_NCCLCALLS_H
