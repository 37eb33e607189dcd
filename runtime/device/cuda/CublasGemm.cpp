//===- CublasGemm.cpp - The compiled step's GEMMs on cuBLAS ---------------===//
//
// (And momarun's gradient accumulation, a cuBLAS saxpy on the same handle.)
// A row-major C = A B is the column-major C^T = B^T A^T, so each call hands
// cuBLAS B as its first operand and A as its second, with m and n swapped;
// the transposes carry over unchanged. One strided-batched call covers a
// group's experts (expert choice gives them the same k) or an attention's
// heads. Math mode and workspace: CublasSettings.h. bf16 operands
// accumulate in f32 (MODEL_SPEC section 7). A product with k = 0 (an expert
// without tokens) is C = beta C, written by EmptyProducts.cu.
//
//===----------------------------------------------------------------------===//

#include "runtime/device/cuda/CublasSettings.h"
#include "runtime/device/cuda/CudaRuntime.h"
#include "runtime/device/cuda/CudaState.h"

#include <cublas_v2.h>

#include <algorithm>
#include <cstdlib>
#include <string>

using namespace momac::cuda;

namespace {

cublasHandle_t handle() {
  static cublasHandle_t instance = [] {
    cublasHandle_t created = nullptr;
    cublasStatus_t status = cublasCreate(&created);
    if (status != CUBLAS_STATUS_SUCCESS) {
      recordError(std::string("cublasCreate: ") +
                  cublasGetStatusName(status));
      return static_cast<cublasHandle_t>(nullptr);
    }
    cublasSetStream(created, stepStream());
    cublasSetMathMode(created, cublasMathMode());
    if (void *workspace = allocator().allocate(kCublasWorkspaceBytes))
      cublasSetWorkspace(created, workspace, kCublasWorkspaceBytes);
    return created;
  }();
  return instance;
}

void gemm(int32_t transA, int32_t transB, int32_t m, int32_t n, int32_t k,
          const void *a, int64_t lda, int64_t strideA, const void *b,
          int64_t ldb, int64_t strideB, float beta, float *c, int64_t ldc,
          int64_t strideC, int32_t batch, cudaDataType operandType,
          const char *name) {
  // Empty groups and experts (no tokens) make empty products.
  if (m <= 0 || n <= 0 || batch <= 0 || !ready())
    return;
  cublasHandle_t cublas = handle();
  if (!cublas)
    return;
  if (k <= 0) {
    scaleRowMajorMatrices(c, m, n, ldc, strideC, batch, beta);
    return;
  }
  float alpha = 1.0f;
  cublasStatus_t status = cublasGemmStridedBatchedEx(
      cublas, transB ? CUBLAS_OP_T : CUBLAS_OP_N,
      transA ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b, operandType,
      static_cast<int>(ldb), strideB, a, operandType, static_cast<int>(lda),
      strideA, &beta, c, CUDA_R_32F, static_cast<int>(ldc), strideC, batch,
      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  if (status == CUBLAS_STATUS_SUCCESS && !syncEachLaunch())
    return;
  std::string call = std::string(name) + " (cublasGemmStridedBatchedEx, m=" +
                     std::to_string(m) + " n=" + std::to_string(n) +
                     " k=" + std::to_string(k) +
                     " batch=" + std::to_string(batch) + ")";
  if (status != CUBLAS_STATUS_SUCCESS)
    recordError(call + ": " + cublasGetStatusName(status));
  else
    afterLibraryCall(call);
}

} // namespace

extern "C" void momart_cuda_gemm_f32(int32_t transA, int32_t transB,
                                     int32_t m, int32_t n, int32_t k,
                                     const float *a, int64_t lda,
                                     int64_t strideA, const float *b,
                                     int64_t ldb, int64_t strideB, float beta,
                                     float *c, int64_t ldc, int64_t strideC,
                                     int32_t batch) {
  gemm(transA, transB, m, n, k, a, lda, strideA, b, ldb, strideB, beta, c,
       ldc, strideC, batch, CUDA_R_32F, "momart_cuda_gemm_f32");
}

extern "C" void momart_cuda_gemm_bf16(int32_t transA, int32_t transB,
                                      int32_t m, int32_t n, int32_t k,
                                      const uint16_t *a, int64_t lda,
                                      int64_t strideA, const uint16_t *b,
                                      int64_t ldb, int64_t strideB, float beta,
                                      float *c, int64_t ldc, int64_t strideC,
                                      int32_t batch) {
  gemm(transA, transB, m, n, k, a, lda, strideA, b, ldb, strideB, beta, c,
       ldc, strideC, batch, CUDA_R_16BF, "momart_cuda_gemm_bf16");
}

extern "C" void momart_cuda_axpy(int64_t count, float alpha, const float *x,
                                 float *y) {
  if (count <= 0 || !ready())
    return;
  cublasHandle_t cublas = handle();
  if (!cublas)
    return;
  // cublasSaxpy counts in int: longer vectors go in pieces.
  const int64_t piece = int64_t(1) << 30;
  for (int64_t offset = 0; offset < count; offset += piece) {
    int n = static_cast<int>(std::min(piece, count - offset));
    cublasStatus_t status =
        cublasSaxpy(cublas, n, &alpha, x + offset, 1, y + offset, 1);
    if (status != CUBLAS_STATUS_SUCCESS) {
      recordError(std::string("momart_cuda_axpy (cublasSaxpy, n=") +
                  std::to_string(n) + "): " + cublasGetStatusName(status));
      return;
    }
  }
}
