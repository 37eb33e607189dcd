//===- GemmF32.cpp - The f32 GEMM that compiled CPU code calls ------------===//

#include "runtime/device/cpu/GemmF32.h"

#include <cblas.h>
#include <immintrin.h>

namespace {

bool hasAvx2Fma() {
  static const bool has =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

/// The sum of the 8 lanes of `v`.
__attribute__((target("avx2,fma"))) inline float sumOf(__m256 v) {
  __m128 half = _mm_add_ps(_mm256_castps256_ps128(v),
                           _mm256_extractf128_ps(v, 1));
  half = _mm_add_ps(half, _mm_movehl_ps(half, half));
  half = _mm_add_ss(half, _mm_movehdup_ps(half));
  return _mm_cvtss_f32(half);
}

/// C[M, n] for a fixed row count M: each row of B (a weight row) is read
/// once, from memory, and multiplied with all M rows of A, which stay in L1.
template <int M>
__attribute__((target("avx2,fma"))) void
fewRows(int32_t n, int32_t k, float alpha, const float *a, int32_t lda,
        const float *b, int32_t ldb, float beta, float *c, int32_t ldc) {
  const int32_t vectorK = k & ~7;
  for (int32_t j = 0; j < n; ++j) {
    const float *row = b + int64_t(j) * ldb;
    __m256 sums[M];
    for (int i = 0; i < M; ++i)
      sums[i] = _mm256_setzero_ps();
    for (int32_t p = 0; p < vectorK; p += 8) {
      __m256 w = _mm256_loadu_ps(row + p);
      for (int i = 0; i < M; ++i)
        sums[i] = _mm256_fmadd_ps(_mm256_loadu_ps(a + int64_t(i) * lda + p),
                                  w, sums[i]);
    }
    for (int i = 0; i < M; ++i) {
      float sum = sumOf(sums[i]);
      for (int32_t p = vectorK; p < k; ++p)
        sum += a[int64_t(i) * lda + p] * row[p];
      float &out = c[int64_t(i) * ldc + j];
      out = beta == 0.0f ? alpha * sum : alpha * sum + beta * out;
    }
  }
}

} // namespace

bool momac::cpu::fewRowsTimesTransposed(int32_t m, int32_t n, int32_t k,
                                        float alpha, const float *a,
                                        int32_t lda, const float *b,
                                        int32_t ldb, float beta, float *c,
                                        int32_t ldc) {
  if (!hasAvx2Fma() || m < 1 || m > kFewRows)
    return false;
  using Kernel = void (*)(int32_t, int32_t, float, const float *, int32_t,
                          const float *, int32_t, float, float *, int32_t);
  static constexpr Kernel kernels[kFewRows] = {
      fewRows<1>, fewRows<2>, fewRows<3>, fewRows<4>,
      fewRows<5>, fewRows<6>, fewRows<7>, fewRows<8>};
  kernels[m - 1](n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  return true;
}

extern "C" void momart_sgemm(int32_t order, int32_t transA, int32_t transB,
                             int32_t m, int32_t n, int32_t k, float alpha,
                             const float *a, int32_t lda, const float *b,
                             int32_t ldb, float beta, float *c, int32_t ldc) {
  if (order == CblasRowMajor && transA == CblasNoTrans &&
      transB == CblasTrans &&
      momac::cpu::fewRowsTimesTransposed(m, n, k, alpha, a, lda, b, ldb, beta,
                                         c, ldc))
    return;
  cblas_sgemm(CblasRowMajor, CBLAS_TRANSPOSE(transA), CBLAS_TRANSPOSE(transB),
              m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
