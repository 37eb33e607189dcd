//===- CudaEmulation.cpp - The CUDA runtime's library calls, on the CPU ---===//
//
// `momac --target=cuda-emulated` runs the CUDA target's mapping on this CPU
// (compiler/Target/CUDA/EmulateGpuOnHost.cpp), so the e2e tests can check
// its numbers without a GPU. The step then calls the CUDA runtime's library
// functions (runtime/device/cuda/CudaRuntime.h) on host memory: here they
// are, with the same contracts, on BLAS.
//
//===----------------------------------------------------------------------===//

#include "runtime/device/cpu/GemmBf16.h"

#include <cblas.h>

#include <cstdint>
#include <cstring>

extern "C" {

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
