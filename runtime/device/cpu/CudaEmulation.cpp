//===- CudaEmulation.cpp - The CUDA runtime's library calls, on the CPU ---===//
//
// `momac --target=cuda-emulated` runs the CUDA target's mapping on this CPU
// (compiler/Target/CUDA/EmulateGpuOnHost.cpp), so the e2e tests can check
// its numbers without a GPU. The step then calls the CUDA runtime's library
// functions (runtime/device/cuda/CudaRuntime.h) on host memory: here they
// are, with the same contracts, on BLAS. So is momarun's side of that
// runtime (device memory, copies, errors), with "device" memory a separate
// host allocation: momarun drives an emulated artifact exactly as a CUDA
// one (runtime/device/cuda/CudaDevice.cpp), so a copy it forgets
// (training state left on the "device" when a checkpoint is written) shows
// in the tests here as it would on a GPU.
//
//===----------------------------------------------------------------------===//

#include "runtime/device/cpu/GemmBf16.h"

#include <cblas.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

extern "C" {

// --- momarun's side -------------------------------------------------------

const char *momart_cuda_status(void) { return nullptr; }

bool momart_cuda_device(char *name, size_t nameSize, size_t *totalBytes) {
  std::snprintf(name, nameSize, "this CPU (momac --target=cuda-emulated)");
  *totalBytes = 0;
  return true;
}

// The "device" memory is this machine's; MOMA_EMULATED_GPU_MEMORY (bytes)
// pretends a smaller GPU, so that the start-up check against a device's free
// memory is tested here.
bool momart_cuda_memory_info(size_t *freeBytes, size_t *totalBytes) {
  const char *pretend = std::getenv("MOMA_EMULATED_GPU_MEMORY");
  size_t bytes = pretend ? size_t(std::strtoull(pretend, nullptr, 10))
                         : size_t(1) << 50;
  *freeBytes = *totalBytes = bytes;
  return true;
}

const char *momart_cuda_device_choice(void) { return ""; }

void *momart_cuda_alloc(size_t bytes) {
  // 64-byte aligned, as the compiled kernels' vector loads like.
  return std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
}

void momart_cuda_free(void *pointer) { std::free(pointer); }

void momart_cuda_copy_to_device(void *device, const void *host, size_t bytes) {
  std::memcpy(device, host, bytes);
}

void momart_cuda_copy_to_host(void *host, const void *device, size_t bytes) {
  std::memcpy(host, device, bytes);
}

void momart_cuda_zero(void *device, size_t bytes) {
  std::memset(device, 0, bytes);
}

void momart_cuda_axpy(int64_t count, float alpha, const float *x, float *y) {
  for (int64_t i = 0; i < count; ++i)
    y[i] += alpha * x[i];
}

void momart_cuda_copy_device(void *to, const void *from, size_t bytes) {
  std::memmove(to, from, bytes);
}

void momart_cuda_synchronize(void) {}

const char *momart_cuda_take_error(void) { return nullptr; }

// --- the compiled step's side ---------------------------------------------

void momart_cuda_read_to_host(void *host, const void *device, int64_t bytes) {
  std::memcpy(host, device, static_cast<size_t>(bytes));
}

void momart_cuda_gemm_f32(int32_t transA, int32_t transB, int32_t m,
                          int32_t n, int32_t k, const float *a, int64_t lda,
                          int64_t strideA, const float *b, int64_t ldb,
                          int64_t strideB, float beta, float *c, int64_t ldc,
                          int64_t strideC, int32_t batch) {
  if (m <= 0 || n <= 0)
    return;
  for (int32_t i = 0; i < batch; ++i)
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
                transB ? CblasTrans : CblasNoTrans, m, n, k, 1.0f,
                a + i * strideA, int(lda), b + i * strideB, int(ldb), beta,
                c + i * strideC, int(ldc));
}

void momart_cuda_gemm_bf16(int32_t transA, int32_t transB, int32_t m,
                           int32_t n, int32_t k, const uint16_t *a,
                           int64_t lda, int64_t strideA, const uint16_t *b,
                           int64_t ldb, int64_t strideB, float beta, float *c,
                           int64_t ldc, int64_t strideC, int32_t batch) {
  if (m <= 0 || n <= 0)
    return;
  for (int32_t i = 0; i < batch; ++i)
    momart_gemm_bf16(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
                     transB ? CblasTrans : CblasNoTrans, m, n, k, 1.0f,
                     a + i * strideA, int(lda), b + i * strideB, int(ldb),
                     beta, c + i * strideC, int(ldc));
}
}
