//===- NcclCollectives.cpp - FSDP collectives between GPUs, over NCCL -----===//
//
// The momart_cuda_comm_* functions of CudaRuntime.h: what a sharded step on
// GPUs gathers and reduce-scatters, as NCCL calls on the step's stream, so
// that they are ordered with the step's kernels and cuBLAS calls by the
// stream itself. Linked into a CUDA artifact's model.so only when it was
// compiled with --fsdp (momac adds -lnccl then). momarun drives it: rank 0
// asks for the unique id, momarun sends it to the other ranks over MPI, and
// every rank joins. From then on every wait for the step's stream (the end
// of a call, the step's host reads, copies) is bounded by the run's timeout:
// past it, the NCCL communicator is aborted, so a lost rank is an error and
// not a hang.
//
//===----------------------------------------------------------------------===//

#include "runtime/device/cuda/CudaRuntime.h"
#include "runtime/device/cuda/CudaState.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <thread>

using namespace momac::cuda;

namespace {

ncclComm_t communicator = nullptr;
/// How long a wait for the step's stream may take (momarun --comm-timeout).
std::chrono::milliseconds timeout{60000};

cudaStream_t stream() { return reinterpret_cast<cudaStream_t>(stepStream()); }

bool checkNccl(ncclResult_t result, const std::string &call) {
  if (result == ncclSuccess)
    return true;
  recordError("NCCL: " + call + " failed: " + ncclGetErrorString(result));
  return false;
}

bool checkCudart(cudaError_t result, const std::string &call) {
  if (result == cudaSuccess)
    return true;
  recordError(call + ": " + cudaGetErrorString(result));
  return false;
}

/// Device memory for a padded collective, from the step's allocator (freed
/// in stream order once the copy that follows the collective is queued).
float *padded(int64_t elements) {
  return static_cast<float *>(
      momart_cuda_alloc(size_t(elements) * sizeof(float)));
}

/// The elements a collective of `shardElements` per rank moves (the ranks'
/// shards end to end), or nothing (and an error naming `call`) without a
/// communicator.
std::optional<int64_t> allShards(const char *call, int64_t shardElements) {
  if (!ready() || !communicator) {
    recordError(std::string(call) + ": no NCCL communicator");
    return std::nullopt;
  }
  int ranks = 0;
  if (!checkNccl(ncclCommCount(communicator, &ranks), "ncclCommCount"))
    return std::nullopt;
  return shardElements * ranks;
}
/// The step stream's wait once NCCL is up (see waitForStepStream): polls
/// until the stream drains, NCCL reports an error, or the run's timeout
/// passes, which aborts the communicator so that the stream drains.
bool boundedWait(const std::string &what) {
  cudaEvent_t done;
  if (!checkCudart(cudaEventCreateWithFlags(&done, cudaEventDisableTiming),
                   "cudaEventCreate") ||
      !checkCudart(cudaEventRecord(done, stream()), "cudaEventRecord"))
    return false;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  bool completed = false;
  for (;;) {
    cudaError_t state = cudaEventQuery(done);
    if (state == cudaSuccess) {
      completed = true;
      break;
    }
    if (state != cudaErrorNotReady) {
      checkCudart(state, "cudaEventQuery (" + what + ")");
      break;
    }
    // A failed collective stays on the stream: abort, so that it drains.
    ncclResult_t async = ncclSuccess;
    if (communicator && (!checkNccl(ncclCommGetAsyncError(communicator, &async),
                                    "ncclCommGetAsyncError") ||
                         (async != ncclSuccess && async != ncclInProgress &&
                          !checkNccl(async, "a collective (" + what + ")")))) {
      ncclCommAbort(communicator);
      communicator = nullptr;
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      // A rank is lost or stalled: abort, so that the stream drains.
      if (communicator)
        ncclCommAbort(communicator);
      communicator = nullptr;
      recordError(what + ": the GPU did not finish within " +
                  std::to_string(timeout.count() / 1000) +
                  " s: a collective waits for a rank that is lost or "
                  "stalled (NCCL aborted)");
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  cudaEventDestroy(done);
  return completed;
}

} // namespace

extern "C" int64_t momart_cuda_comm_id_bytes(void) {
  return int64_t(sizeof(ncclUniqueId));
}

extern "C" bool momart_cuda_comm_unique_id(void *id) {
  if (!ready())
    return false;
  ncclUniqueId unique;
  if (!checkNccl(ncclGetUniqueId(&unique), "ncclGetUniqueId"))
    return false;
  std::memcpy(id, &unique, sizeof(unique));
  return true;
}

extern "C" bool momart_cuda_comm_init(const void *id, int32_t rank,
                                      int32_t ranks, int64_t timeoutMs) {
  if (!ready())
    return false;
  if (communicator)
    return true;
  ncclUniqueId unique;
  std::memcpy(&unique, id, sizeof(unique));
  // Blocking: the join waits for every rank (mpirun ends the job when one
  // dies before it).
  if (!checkNccl(ncclCommInitRank(&communicator, ranks, unique, rank),
                 "ncclCommInitRank (rank " + std::to_string(rank) + " of " +
                     std::to_string(ranks) + ")")) {
    communicator = nullptr;
    return false;
  }
  timeout = std::chrono::milliseconds(timeoutMs);
  setStreamWait(&boundedWait);
  return true;
}

extern "C" void momart_cuda_all_gather(const float *shard, float *full,
                                       int64_t shardElements, int64_t total) {
  std::optional<int64_t> gathered =
      allShards("momart_cuda_all_gather", shardElements);
  if (!gathered)
    return;
  // Shards are equal; the last ranks' pieces past `total` are padding.
  float *receive = *gathered == total ? full : padded(*gathered);
  if (!receive)
    return;
  if (!checkNccl(ncclAllGather(shard, receive, size_t(shardElements), ncclFloat,
                               communicator, stream()),
                 "ncclAllGather"))
    return;
  if (receive != full) {
    momart_cuda_copy_device(full, receive, size_t(total) * sizeof(float));
    momart_cuda_free(receive);
  }
}

extern "C" void momart_cuda_reduce_scatter(const float *full, float *shard,
                                           int64_t shardElements,
                                           int64_t total) {
  std::optional<int64_t> scattered =
      allShards("momart_cuda_reduce_scatter", shardElements);
  if (!scattered)
    return;
  const float *send = full;
  float *staged = nullptr;
  if (*scattered != total) {
    if (!(staged = padded(*scattered)))
      return;
    momart_cuda_zero(staged + total,
                     size_t(*scattered - total) * sizeof(float));
    momart_cuda_copy_device(staged, full, size_t(total) * sizeof(float));
    send = staged;
  }
  checkNccl(ncclReduceScatter(send, shard, size_t(shardElements), ncclFloat,
                              ncclSum, communicator, stream()),
            "ncclReduceScatter");
  if (staged)
    momart_cuda_free(staged);
}

extern "C" void momart_cuda_comm_destroy(void) {
  setStreamWait(nullptr);
  if (communicator)
    ncclCommDestroy(communicator);
  communicator = nullptr;
}
