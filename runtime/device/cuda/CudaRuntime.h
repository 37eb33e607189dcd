//===- CudaRuntime.h - What CUDA artifacts and momarun call -----*- C++ -*-===//
//
// The CUDA device runtime, linked statically into every CUDA artifact's
// model.so (as the CPU runtime is into CPU artifacts), so that an artifact
// carries the code that runs it and momarun needs no CUDA of its own:
//
// - the `mgpu*` ABI that MLIR's gpu-to-llvm emits (module loading, kernel
//   launches, streams, allocation, copies), on the CUDA driver API. Debian's
//   MLIR ships no libmlir_cuda_runtime; this one differs from upstream's in
//   that a step runs on one stream (mgpuStreamCreate returns it), memory
//   comes from a caching allocator, and errors do not abort the process:
//   the first one is kept, naming the call and the kernel, and later work
//   is skipped until momarun reads it (momart_cuda_take_error);
// - the library calls the compiled step makes: cuBLAS GEMMs
//   (momart_cuda_gemm_*), top-k selection (momart_select_smallest_i64, with
//   the CPU runtime's contract, on device memory), the host reads
//   (momart_cuda_read_to_host);
// - what momarun needs to run an artifact: device memory, copies, the
//   device's name and memory, the error.
//
// Every function is extern "C" and safe to call without a GPU: the first
// call initializes the driver and remembers why it could not.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_DEVICE_CUDA_CUDARUNTIME_H
#define MOMAC_RUNTIME_DEVICE_CUDA_CUDARUNTIME_H

#include <cstddef>
#include <cstdint>

extern "C" {

// --- momarun's side -------------------------------------------------------

/// Null when the GPU is ready and every embedded kernel module loaded;
/// otherwise why not, in one line ("no CUDA device", "the CUDA driver
/// supports CUDA 11.4; these kernels need 12.0 or newer", "the GPU ... has
/// compute capability 8.0; the kernels are for sm_90 ..."). The string
/// lives as long as the process.
const char *momart_cuda_status(void);
/// The device's name and total memory (bytes); false without a device.
bool momart_cuda_device(char *name, size_t nameSize, size_t *totalBytes);
/// The driver's free and total memory of the device (cuMemGetInfo); false
/// without a device. momarun refuses a run whose state does not fit.
bool momart_cuda_memory_info(size_t *freeBytes, size_t *totalBytes);
/// Why this process uses the GPU it does ("node-local rank 1 (...) of 8
/// visible GPU(s)", DeviceChoice.h); empty for GPU 0 without a rank.
const char *momart_cuda_device_choice(void);
/// Device memory from the caching allocator; null (and an error) when the
/// device is full.
void *momart_cuda_alloc(size_t bytes);
void momart_cuda_free(void *pointer);
/// Copies in stream order; the copy to the host waits for the stream.
void momart_cuda_copy_to_device(void *device, const void *host, size_t bytes);
void momart_cuda_copy_to_host(void *host, const void *device, size_t bytes);
/// Zeroes device memory in stream order.
void momart_cuda_zero(void *device, size_t bytes);
/// y += alpha x over `count` floats of device memory, in stream order
/// (cuBLAS saxpy): momarun sums micro-batch gradients with it.
void momart_cuda_axpy(int64_t count, float alpha, const float *x, float *y);
/// Copies between device buffers, in stream order.
void momart_cuda_copy_device(void *to, const void *from, size_t bytes);
/// Waits for everything queued.
void momart_cuda_synchronize(void);
/// The first error since the last call (null if none), and clears it. The
/// string lives until the next call.
const char *momart_cuda_take_error(void);
/// Bytes in use, cached and at most in use, as the allocator counts them.
void momart_cuda_memory(size_t *inUse, size_t *cached, size_t *peak);

// --- FSDP between GPUs (NcclCollectives.cpp; only in --fsdp artifacts) ----
/// NCCL on the step's stream. Rank 0 gets the unique id
/// (momart_cuda_comm_id_bytes long), every rank joins with it; a gather
/// fills `full` (`total` floats) with every rank's `shardElements`, a
/// reduce-scatter leaves in `shard` this rank's piece of the ranks' summed
/// `full`. Once joined, every wait for the step's stream takes at most
/// `timeoutMs`, after which the communicator is aborted (an error).
int64_t momart_cuda_comm_id_bytes(void);
bool momart_cuda_comm_unique_id(void *id);
bool momart_cuda_comm_init(const void *id, int32_t rank, int32_t ranks,
                           int64_t timeoutMs);
void momart_cuda_all_gather(const float *shard, float *full,
                            int64_t shardElements, int64_t total);
void momart_cuda_reduce_scatter(const float *full, float *shard,
                                int64_t shardElements, int64_t total);
void momart_cuda_comm_destroy(void);

// --- the compiled step's side ---------------------------------------------

/// Copies `bytes` from the device to the host after the work queued so
/// far and waits for it: the step's reads of token counts (see
/// compiler/Target/CUDA/MapHostCodeToGpu.cpp). On an error the host
/// buffer is zeroed.
void momart_cuda_read_to_host(void *host, const void *device, int64_t bytes);

/// Row-major C[i] = A[i] B[i] + beta C[i], i < batch, f32 accumulation,
/// on the step's stream: A is m x k (k x m when transA), B k x n (n x k
/// when transB), consecutive batch elements `stride*` elements apart. TF32
/// is off unless MOMA_ALLOW_TF32=1.
void momart_cuda_gemm_f32(int32_t transA, int32_t transB, int32_t m,
                          int32_t n, int32_t k, const float *a, int64_t lda,
                          int64_t strideA, const float *b, int64_t ldb,
                          int64_t strideB, float beta, float *c, int64_t ldc,
                          int64_t strideC, int32_t batch);
/// The same with bf16 A and B (uint16_t bits), f32 C.
void momart_cuda_gemm_bf16(int32_t transA, int32_t transB, int32_t m,
                           int32_t n, int32_t k, const uint16_t *a,
                           int64_t lda, int64_t strideA, const uint16_t *b,
                           int64_t ldb, int64_t strideB, float beta, float *c,
                           int64_t ldc, int64_t strideC, int32_t batch);

/// runtime/device/cpu/Select.h's contract on device memory: each of `rows`
/// rows of `cols` keys gets its min(k, cols) smallest keys at its front in
/// ascending order (here: the whole row sorted, by CUB's segmented radix
/// sort).
void momart_select_smallest_i64(int64_t *keys, int64_t rows, int64_t cols,
                                int64_t k);

// --- the mgpu* ABI (MLIR gpu-to-llvm) ---------------------------------------

void *mgpuModuleLoad(void *data, size_t gpuBlobSize);
void *mgpuModuleLoadJIT(void *data, int optLevel);
void mgpuModuleUnload(void *module);
void *mgpuModuleGetFunction(void *module, const char *name);
void mgpuLaunchKernel(void *function, intptr_t gridX, intptr_t gridY,
                      intptr_t gridZ, intptr_t blockX, intptr_t blockY,
                      intptr_t blockZ, int32_t smem, void *stream,
                      void **params, void **extra, size_t paramsCount);
void *mgpuStreamCreate(void);
void mgpuStreamDestroy(void *stream);
void mgpuStreamSynchronize(void *stream);
void mgpuStreamWaitEvent(void *stream, void *event);
void *mgpuEventCreate(void);
void mgpuEventDestroy(void *event);
void mgpuEventSynchronize(void *event);
void mgpuEventRecord(void *event, void *stream);
void *mgpuMemAlloc(uint64_t sizeBytes, void *stream, bool isHostShared);
void mgpuMemFree(void *ptr, void *stream);
void mgpuMemcpy(void *dst, void *src, size_t sizeBytes, void *stream);
void mgpuMemset32(void *dst, unsigned int value, size_t count, void *stream);
void mgpuMemset16(void *dst, unsigned short value, size_t count,
                  void *stream);
void mgpuSetDefaultDevice(int32_t device);
}

#endif // MOMAC_RUNTIME_DEVICE_CUDA_CUDARUNTIME_H
