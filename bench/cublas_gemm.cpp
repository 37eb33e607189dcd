//===- cublas_gemm.cpp - cuBLAS against cuBLASLt on a step's bf16 GEMMs ----===//
//
// The measurement behind the CUDA target's bf16 GEMM choice (issue 9: "bf16
// with fp32 accumulation, cuBLASLt where it is faster"), as blas_gemm.cpp is
// behind the CPU's: times the call the runtime makes today
// (cublasGemmStridedBatchedEx, bf16 operands, f32 output and compute,
// runtime/device/cuda/CublasGemm.cpp) against cublasLtMatmul on the same
// problem, with the algorithm cuBLASLt's heuristic ranks first (what a
// runtime without tuning would run) and the fastest of its first eight
// (what tuning per shape would get), on the GEMM shapes of the benchmark
// models' training steps: forward, input gradient and weight gradient of
// projections, experts (strided-batched over a group's experts) and the
// output layer. The cuBLAS handle runs with the runtime's own math mode and
// workspace (runtime/device/cuda/CublasSettings.h). The GPU bundle's run.sh
// runs it (scripts/gpu-bundle.sh); without a GPU it says so.
//
//   momac-bench-cublas [REPEATS]
//
//===----------------------------------------------------------------------===//

#include "runtime/device/cuda/CublasSettings.h"

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace {

/// Row-major C[M, N] = op(A) op(B), `batch` times with packed strides, as
/// the artifact calls it (CublasGemm.cpp turns it into column-major C^T).
struct Shape {
  const char *label;
  int batch, m, n, k;
  bool transA, transB;
};

const Shape kShapes[] = {
    {"small90  q/k/v/o     x w^T", 1, 2048, 512, 512, false, true},
    {"small90  expert up   x w1^T", 4, 256, 1368, 512, false, true},
    {"small90  expert down h w2^T", 4, 256, 512, 1368, false, true},
    {"small90  expert dX   dh w1", 4, 256, 512, 1368, false, false},
    {"small90  expert dW1  dh^T x", 4, 1368, 512, 256, true, false},
    {"small90  output      x W^T", 1, 2048, 65536, 512, false, true},
    {"435M     q/k/v/o     x w^T", 1, 4096, 1024, 1024, false, true},
    {"435M     expert up   x w1^T", 4, 512, 2728, 1024, false, true},
    {"435M     expert down h w2^T", 4, 512, 1024, 2728, false, true},
    {"435M     expert dX   dh w1", 4, 512, 1024, 2728, false, false},
    {"435M     expert dW1  dh^T x", 4, 2728, 1024, 512, true, false},
    {"435M     output      x W^T", 1, 4096, 65536, 1024, false, true},
    {"435M     output dW   dy^T x", 1, 65536, 1024, 4096, true, false},
};

using momac::cuda::kCublasWorkspaceBytes;
constexpr size_t kWorkspaceBytes = kCublasWorkspaceBytes;

[[noreturn]] void die(const std::string &what) {
  std::fprintf(stderr, "momac-bench-cublas: %s\n", what.c_str());
  std::exit(1);
}
void check(cudaError_t status, const char *call) {
  if (status != cudaSuccess)
    die(std::string(call) + ": " + cudaGetErrorString(status));
}
void check(cublasStatus_t status, const char *call) {
  if (status != CUBLAS_STATUS_SUCCESS)
    die(std::string(call) + ": " + cublasGetStatusName(status));
}

/// The column-major problem cuBLAS sees: C^T[n, m] = op(B^T) op(A^T).
struct ColumnMajor {
  cublasOperation_t opX, opY; // X is the row-major B, Y the row-major A
  int rows, cols, inner;      // n, m, k
  int64_t ldx, ldy, ldc, strideX, strideY, strideC;
};

ColumnMajor columnMajor(const Shape &s) {
  ColumnMajor c;
  c.opX = s.transB ? CUBLAS_OP_T : CUBLAS_OP_N;
  c.opY = s.transA ? CUBLAS_OP_T : CUBLAS_OP_N;
  c.rows = s.n;
  c.cols = s.m;
  c.inner = s.k;
  c.ldx = s.transB ? s.k : s.n;
  c.ldy = s.transA ? s.m : s.k;
  c.ldc = s.n;
  c.strideX = int64_t(s.k) * s.n;
  c.strideY = int64_t(s.m) * s.k;
  c.strideC = int64_t(s.m) * s.n;
  return c;
}

/// Milliseconds per call of `call`, over `repeats` calls after two warm-ups.
template <typename Call>
float timeCalls(cudaStream_t stream, int repeats, Call call) {
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  call();
  call();
  check(cudaEventRecord(start, stream), "cudaEventRecord");
  for (int i = 0; i < repeats; ++i)
    call();
  check(cudaEventRecord(stop, stream), "cudaEventRecord");
  check(cudaEventSynchronize(stop), "cudaEventSynchronize");
  float ms = 0;
  check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms / float(repeats);
}

struct LtLayouts {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t x = nullptr, y = nullptr, c = nullptr;
  ~LtLayouts() {
    if (c)
      cublasLtMatrixLayoutDestroy(c);
    if (y)
      cublasLtMatrixLayoutDestroy(y);
    if (x)
      cublasLtMatrixLayoutDestroy(x);
    if (desc)
      cublasLtMatmulDescDestroy(desc);
  }
};

cublasLtMatrixLayout_t layout(cudaDataType type, bool transposed, int rows,
                              int cols, int64_t ld, int batch,
                              int64_t stride) {
  cublasLtMatrixLayout_t created;
  // A transposed operand is stored as its transpose.
  check(cublasLtMatrixLayoutCreate(&created, type, transposed ? cols : rows,
                                   transposed ? rows : cols, ld),
        "cublasLtMatrixLayoutCreate");
  check(cublasLtMatrixLayoutSetAttribute(
            created, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch,
            sizeof(batch)),
        "cublasLtMatrixLayoutSetAttribute(BATCH_COUNT)");
  check(cublasLtMatrixLayoutSetAttribute(
            created, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
            sizeof(stride)),
        "cublasLtMatrixLayoutSetAttribute(STRIDED_BATCH_OFFSET)");
  return created;
}

} // namespace

int main(int argc, char **argv) {
  int repeats = argc > 1 ? std::max(1, std::atoi(argv[1])) : 20;
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("momac-bench-cublas: no CUDA device; nothing to time\n");
    return 0;
  }
  cudaDeviceProp properties;
  check(cudaGetDeviceProperties(&properties, 0), "cudaGetDeviceProperties");
  std::printf("%s, %d repeats per shape; bf16 operands, f32 output and "
              "compute, beta 0; cuBLAS with the runtime's math mode (%s) and "
              "a %zu MiB workspace\n",
              properties.name, repeats,
              momac::cuda::cublasMathMode() == CUBLAS_DEFAULT_MATH
                  ? "default"
                  : "TF32",
              kWorkspaceBytes >> 20);

  cudaStream_t stream;
  check(cudaStreamCreate(&stream), "cudaStreamCreate");
  cublasHandle_t cublas;
  check(cublasCreate(&cublas), "cublasCreate");
  check(cublasSetStream(cublas, stream), "cublasSetStream");
  cublasLtHandle_t lt;
  check(cublasLtCreate(&lt), "cublasLtCreate");
  void *workspace = nullptr;
  check(cudaMalloc(&workspace, kWorkspaceBytes), "cudaMalloc(workspace)");
  check(cublasSetWorkspace(cublas, workspace, kWorkspaceBytes),
        "cublasSetWorkspace");
  check(cublasSetMathMode(cublas, momac::cuda::cublasMathMode()),
        "cublasSetMathMode");

  std::printf("| shape | batch x M x N x K | cuBLAS us | Lt heuristic us | "
              "Lt best of 8 us | Lt best / cuBLAS | cuBLAS TFLOP/s |\n"
              "|---|---|---|---|---|---|---|\n");
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (const Shape &s : kShapes) {
    ColumnMajor cm = columnMajor(s);
    size_t xCount = size_t(s.batch) * cm.strideX;
    size_t yCount = size_t(s.batch) * cm.strideY;
    size_t cCount = size_t(s.batch) * cm.strideC;
    std::vector<__nv_bfloat16> host(std::max(xCount, yCount));
    for (__nv_bfloat16 &v : host)
      v = __float2bfloat16(uniform(rng));
    void *x, *y, *c;
    check(cudaMalloc(&x, xCount * 2), "cudaMalloc(B)");
    check(cudaMalloc(&y, yCount * 2), "cudaMalloc(A)");
    check(cudaMalloc(&c, cCount * 4), "cudaMalloc(C)");
    check(cudaMemcpy(x, host.data(), xCount * 2, cudaMemcpyHostToDevice),
          "cudaMemcpy");
    check(cudaMemcpy(y, host.data(), yCount * 2, cudaMemcpyHostToDevice),
          "cudaMemcpy");
    float alpha = 1.0f, beta = 0.0f;

    float cublasMs = timeCalls(stream, repeats, [&] {
      check(cublasGemmStridedBatchedEx(
                cublas, cm.opX, cm.opY, cm.rows, cm.cols, cm.inner, &alpha, x,
                CUDA_R_16BF, int(cm.ldx), cm.strideX, y, CUDA_R_16BF,
                int(cm.ldy), cm.strideY, &beta, c, CUDA_R_32F, int(cm.ldc),
                cm.strideC, s.batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            "cublasGemmStridedBatchedEx");
    });

    LtLayouts l;
    check(cublasLtMatmulDescCreate(&l.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F),
          "cublasLtMatmulDescCreate");
    check(cublasLtMatmulDescSetAttribute(l.desc, CUBLASLT_MATMUL_DESC_TRANSA,
                                         &cm.opX, sizeof(cm.opX)),
          "cublasLtMatmulDescSetAttribute(TRANSA)");
    check(cublasLtMatmulDescSetAttribute(l.desc, CUBLASLT_MATMUL_DESC_TRANSB,
                                         &cm.opY, sizeof(cm.opY)),
          "cublasLtMatmulDescSetAttribute(TRANSB)");
    l.x = layout(CUDA_R_16BF, cm.opX == CUBLAS_OP_T, cm.rows, cm.inner,
                 cm.ldx, s.batch, cm.strideX);
    l.y = layout(CUDA_R_16BF, cm.opY == CUBLAS_OP_T, cm.inner, cm.cols,
                 cm.ldy, s.batch, cm.strideY);
    l.c = layout(CUDA_R_32F, false, cm.rows, cm.cols, cm.ldc, s.batch,
                 cm.strideC);
    cublasLtMatmulPreference_t preference;
    check(cublasLtMatmulPreferenceCreate(&preference),
          "cublasLtMatmulPreferenceCreate");
    size_t workspaceBytes = kWorkspaceBytes;
    check(cublasLtMatmulPreferenceSetAttribute(
              preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
              &workspaceBytes, sizeof(workspaceBytes)),
          "cublasLtMatmulPreferenceSetAttribute");
    cublasLtMatmulHeuristicResult_t candidates[8];
    int found = 0;
    check(cublasLtMatmulAlgoGetHeuristic(lt, l.desc, l.x, l.y, l.c, l.c,
                                         preference, 8, candidates, &found),
          "cublasLtMatmulAlgoGetHeuristic");
    cublasLtMatmulPreferenceDestroy(preference);
    float heuristicMs = -1, bestMs = -1;
    for (int i = 0; i < found; ++i) {
      float ms = timeCalls(stream, repeats, [&] {
        check(cublasLtMatmul(lt, l.desc, &alpha, x, l.x, y, l.y, &beta, c, l.c,
                             c, l.c, &candidates[i].algo, workspace,
                             kWorkspaceBytes, stream),
              "cublasLtMatmul");
      });
      if (i == 0)
        heuristicMs = ms;
      if (bestMs < 0 || ms < bestMs)
        bestMs = ms;
    }
    double flops = 2.0 * s.batch * double(s.m) * s.n * s.k;
    std::printf("| %s | %d x %d x %d x %d | %.1f | %.1f | %.1f | %.2f | %.0f "
                "|\n",
                s.label, s.batch, s.m, s.n, s.k, cublasMs * 1e3,
                heuristicMs * 1e3, bestMs * 1e3,
                bestMs > 0 ? bestMs / cublasMs : 0.0,
                flops / (cublasMs * 1e-3) / 1e12);
    cudaFree(c);
    cudaFree(y);
    cudaFree(x);
  }
  cublasLtDestroy(lt);
  cublasDestroy(cublas);
  cudaFree(workspace);
  cudaStreamDestroy(stream);
  return 0;
}
