//===- CudaState.h - The CUDA runtime's process state -----------*- C++ -*-===//
//
// Internal to runtime/device/cuda: what the mgpu* ABI, the cuBLAS GEMMs and
// the top-k share. One device, one context (the primary one, which cuBLAS
// and CUB's runtime-API calls use too), one stream for the steps.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_DEVICE_CUDA_CUDASTATE_H
#define MOMAC_RUNTIME_DEVICE_CUDA_CUDASTATE_H

#include "runtime/device/cuda/CachingAllocator.h"

#include <cuda.h>

#include <string>

namespace momac::cuda {

/// Initializes the driver on first use. False when there is no usable
/// device or an error is pending: the caller skips its work.
bool ready();
/// The stream every step's work runs on.
CUstream stepStream();
CachingAllocator &allocator();
/// Keeps `message` as the pending error unless one is pending already.
void recordError(const std::string &message);
/// Waits for the step's stream; false (and an error naming `what`) when
/// it fails. Once a sharded run's NCCL is up, the wait is the one
/// NcclCollectives.cpp installs: bounded by the run's timeout, after which
/// it aborts NCCL, so that a lost rank is an error rather than a hang.
bool waitForStepStream(const std::string &what);
using StreamWait = bool (*)(const std::string &what);
void setStreamWait(StreamWait wait);
/// `call` failed with `result`: records "<call>: <CUDA error name> (<its
/// description>)"; returns false on failure so callers can write
/// `if (!check(cuX(...), "cuX")) return;`.
bool check(CUresult result, const std::string &call);

/// Row-major C[b] = beta C[b] over `rows` x `cols` (leading dimension `ldc`,
/// batch elements `strideC` apart), C = 0 exactly when beta is 0: the GEMM
/// with k = 0 (EmptyProducts.cu).
void scaleRowMajorMatrices(float *c, int64_t rows, int64_t cols, int64_t ldc,
                           int64_t strideC, int32_t batch, float beta);

/// With MOMA_CUDA_SYNC_LAUNCHES=1, waits for the stream after each kernel
/// launch and library call and records an error naming `what` (the kernel,
/// or the call with its sizes) when it failed: a failure is then reported
/// where it happened instead of at the step's end. Otherwise does nothing.
void afterLibraryCall(const std::string &what);
bool syncEachLaunch();

} // namespace momac::cuda

#endif // MOMAC_RUNTIME_DEVICE_CUDA_CUDASTATE_H
