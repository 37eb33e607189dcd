//===- EmptyProducts.cu - C = beta C for GEMMs with nothing to sum --------===//
//
// A GEMM whose inner dimension k is 0 (an expert with no tokens, in the
// weight gradient dW = X^T dY over its empty token list) is C = beta C. What
// cuBLAS does with k = 0 varies by routine and version, and with beta = 0
// BLAS semantics are C = 0 whatever C held (NaN included), not 0 * C. So the
// runtime does not ask cuBLAS: this kernel writes C itself.
//
//===----------------------------------------------------------------------===//

#include "runtime/device/cuda/CudaState.h"

#include <algorithm>
#include <string>

using namespace momac::cuda;

namespace {

__global__ void scaleMatrices(float *c, int64_t rows, int64_t cols,
                              int64_t ldc, int64_t strideC, int64_t batch,
                              float beta) {
  int64_t total = batch * rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t b = i / (rows * cols), r = i / cols % rows, col = i % cols;
    float &element = c[b * strideC + r * ldc + col];
    element = beta == 0.0f ? 0.0f : beta * element;
  }
}

} // namespace

void momac::cuda::scaleRowMajorMatrices(float *c, int64_t rows, int64_t cols,
                                        int64_t ldc, int64_t strideC,
                                        int32_t batch, float beta) {
  if (rows <= 0 || cols <= 0 || batch <= 0 || beta == 1.0f || !ready())
    return;
  int64_t total = int64_t(batch) * rows * cols;
  int blocks = int(std::min<int64_t>((total + 255) / 256, 4096));
  scaleMatrices<<<blocks, 256, 0, stepStream()>>>(c, rows, cols, ldc, strideC,
                                                  batch, beta);
  cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess)
    recordError(std::string("scaleMatrices (C = beta C of a GEMM with k = "
                            "0): ") +
                cudaGetErrorName(error));
  afterLibraryCall("scaleMatrices (C = beta C of a GEMM with k = 0)");
}
