//===- blas_gemm.cpp - OpenBLAS against oneDNN on a step's GEMMs ----------===//
//
// The measurement behind the CPU BLAS choice (DESIGN.md): times
// cblas_sgemm (OpenBLAS), dnnl_sgemm (oneDNN) and momart_sgemm (what
// compiled code calls: OpenBLAS or momac's own small kernels) on the GEMM
// shapes of the benchmark models' training steps (forward, input gradient
// and weight gradient of projections, experts, attention scores and tiles,
// the output layer), row major, C += op(A) op(B) as the artifact calls them
// (C = op(A) op(B) where a row says beta 0). Threads come from the
// environment (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS); bench/run.py runs it
// with 1 thread, the way the artifact calls BLAS inside its own OpenMP
// loops, and with 2.
//
//===----------------------------------------------------------------------===//

#include "runtime/device/cpu/GemmF32.h"

#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

namespace {

struct Shape {
  const char *label;
  int m, n, k;
  bool transA, transB;
  float beta = 1.0f; // 0: C = op(A) op(B), where OpenBLAS first zeroes C
};

// (M, N, K) of C[M, N] += op(A) op(B); see the file comment.
const Shape kShapes[] = {
    {"tiny  q/k/v/o      x w^T", 1024, 128, 128, false, true},
    {"tiny  expert up    x w1^T", 128, 344, 128, false, true},
    {"tiny  expert down  h w2^T", 128, 128, 344, false, true},
    {"tiny  expert dW1   dh^T x", 344, 128, 128, true, false},
    {"tiny  output       x W^T", 1024, 512, 128, false, true},
    {"tiny  output dX    dy W", 1024, 128, 512, false, false},
    {"tiny  scores/head  q k^T", 128, 128, 32, false, true},
    {"90M   q/k/v/o      x w^T", 256, 512, 512, false, true},
    {"90M   expert up    x w1^T", 32, 1368, 512, false, true},
    {"90M   expert dW1   dh^T x", 1368, 512, 32, true, false},
    {"90M   output       x W^T", 256, 16384, 512, false, true},
    {"90M   output dW    dy^T x", 16384, 512, 256, true, false},
    {"90M   scores/head  q k^T", 128, 128, 64, false, true},
    {"bench-tiny scores tile q k^T", 64, 64, 32, false, true, 0.0f},
    {"bench-tiny values tile p v", 64, 32, 64, false, false},
    {"bench-tiny dV tile     p^T do", 64, 32, 64, true, false},
    {"large square", 1024, 1024, 1024, false, false},
};

using Gemm = void (*)(const Shape &, const float *, const float *, float *);

void openblas(const Shape &s, const float *a, const float *b, float *c) {
  cblas_sgemm(CblasRowMajor, s.transA ? CblasTrans : CblasNoTrans,
              s.transB ? CblasTrans : CblasNoTrans, s.m, s.n, s.k, 1.0f, a,
              s.transA ? s.m : s.k, b, s.transB ? s.k : s.n, s.beta, c, s.n);
}

/// What compiled CPU code calls: OpenBLAS, or momac's few-row and
/// small-GEMM kernels where they apply.
void momart(const Shape &s, const float *a, const float *b, float *c) {
  momart_sgemm(CblasRowMajor, s.transA ? CblasTrans : CblasNoTrans,
               s.transB ? CblasTrans : CblasNoTrans, s.m, s.n, s.k, 1.0f, a,
               s.transA ? s.m : s.k, b, s.transB ? s.k : s.n, s.beta, c, s.n);
}

void onednn(const Shape &s, const float *a, const float *b, float *c) {
  dnnl_sgemm(s.transA ? 'T' : 'N', s.transB ? 'T' : 'N', s.m, s.n, s.k, 1.0f, a,
             s.transA ? s.m : s.k, b, s.transB ? s.k : s.n, s.beta, c, s.n);
}

/// GFLOP/s of `gemm` on `s`, from repeated calls over at least 0.2 s.
double measure(Gemm gemm, const Shape &s) {
  std::mt19937 rng(0);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> a(size_t(s.m) * s.k), b(size_t(s.k) * s.n),
      c(size_t(s.m) * s.n, 0.0f);
  for (float &x : a)
    x = uniform(rng);
  for (float &x : b)
    x = uniform(rng);
  gemm(s, a.data(), b.data(), c.data()); // warm-up (packing buffers, pools)
  using Clock = std::chrono::steady_clock;
  long calls = 0;
  double seconds = 0;
  auto start = Clock::now();
  while (seconds < 0.2) {
    gemm(s, a.data(), b.data(), c.data());
    ++calls;
    seconds = std::chrono::duration<double>(Clock::now() - start).count();
  }
  return 2.0 * s.m * s.n * s.k * calls / seconds / 1e9;
}

} // namespace

int main() {
  std::printf("%-28s %7s %7s %7s %10s %10s %7s %14s\n", "GEMM", "M", "N", "K",
              "OpenBLAS", "oneDNN", "ratio", "momart_sgemm");
  double logRatio = 0;
  int count = 0;
  for (const Shape &s : kShapes) {
    double ours = measure(openblas, s), theirs = measure(onednn, s),
           called = measure(momart, s);
    std::printf("%-28s %7d %7d %7d %10.1f %10.1f %7.2f %14.1f\n", s.label, s.m,
                s.n, s.k, ours, theirs, ours / theirs, called);
    logRatio += std::log(ours / theirs);
    ++count;
  }
  std::printf("GFLOP/s; ratio = OpenBLAS / oneDNN, geometric mean %.2f; "
              "momart_sgemm: what compiled CPU code calls\n",
              std::exp(logRatio / count));
  return 0;
}
