//===- GemmF32.cpp - The f32 GEMM that compiled CPU code calls ------------===//

#include "runtime/device/cpu/GemmF32.h"

#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>

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

/// The register tile of the small-GEMM kernel: kTileRows rows of C by
/// kTileCols columns, 12 of AVX2's 16 vector registers.
constexpr int32_t kTileRows = 6;
constexpr int32_t kTileCols = 16;

/// One register tile: C[MR, cols] = alpha op(A) Bp + beta C. op(A)[r, p] is
/// a[r * rowStride + p * depthStride] (A transposed or not, read in place);
/// Bp[p * ldbp + j] are kTileCols columns of op(B), which must be readable
/// (zero or not) past `cols`.
template <int MR>
__attribute__((target("avx2,fma"))) void
registerTile(int32_t k, const float *a, int64_t rowStride, int64_t depthStride,
             const float *bp, int64_t ldbp, int32_t cols, float alpha,
             float beta, float *c, int32_t ldc) {
  __m256 acc[MR][2];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r)
    acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int32_t p = 0; p < k; ++p) {
    const __m256 b0 = _mm256_loadu_ps(bp + p * ldbp);
    const __m256 b1 = _mm256_loadu_ps(bp + p * ldbp + 8);
    const float *column = a + p * depthStride;
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      const __m256 x = _mm256_broadcast_ss(column + r * rowStride);
      acc[r][0] = _mm256_fmadd_ps(x, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(x, b1, acc[r][1]);
    }
  }
  const __m256 alphas = _mm256_set1_ps(alpha), betas = _mm256_set1_ps(beta);
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    float *row = c + int64_t(r) * ldc;
    if (cols == kTileCols) {
      __m256 lo = _mm256_mul_ps(alphas, acc[r][0]);
      __m256 hi = _mm256_mul_ps(alphas, acc[r][1]);
      if (beta != 0.0f) {
        lo = _mm256_fmadd_ps(betas, _mm256_loadu_ps(row), lo);
        hi = _mm256_fmadd_ps(betas, _mm256_loadu_ps(row + 8), hi);
      }
      _mm256_storeu_ps(row, lo);
      _mm256_storeu_ps(row + 8, hi);
      continue;
    }
    alignas(32) float sums[kTileCols];
    _mm256_store_ps(sums, acc[r][0]);
    _mm256_store_ps(sums + 8, acc[r][1]);
    for (int32_t j = 0; j < cols; ++j)
      // The full tile's rounding: one fused beta * C + (alpha * sum).
      row[j] = beta == 0.0f ? alpha * sums[j]
                            : std::fma(beta, row[j], alpha * sums[j]);
  }
}

int32_t roundUp(int32_t n) {
  return (n + kTileCols - 1) / kTileCols * kTileCols;
}

/// The columns of op(B) the small-GEMM kernel copies: all of them, padded,
/// where B is transposed; else those of the last, partial block.
int32_t packedColumns(bool transB, int32_t n) {
  return transB ? roundUp(n) : roundUp(n) - n / kTileCols * kTileCols;
}

/// to[p * ldTo + j] = from[j * ldFrom + p] for j < rows, p < cols: 8 x 8
/// blocks in registers (a transposed B's rows are read whole), then the
/// edges one by one.
__attribute__((target("avx2,fma"))) void
transposeInto(const float *from, int64_t ldFrom, int32_t rows, int32_t cols,
              float *to, int64_t ldTo) {
  const int32_t wholeRows = rows / 8 * 8, wholeCols = cols / 8 * 8;
  for (int32_t j = 0; j < wholeRows; j += 8)
    for (int32_t p = 0; p < wholeCols; p += 8) {
      __m256 r[8], t[8];
      for (int q = 0; q < 8; ++q)
        r[q] = _mm256_loadu_ps(from + (j + q) * ldFrom + p);
      for (int q = 0; q < 8; q += 2) {
        t[q] = _mm256_unpacklo_ps(r[q], r[q + 1]);
        t[q + 1] = _mm256_unpackhi_ps(r[q], r[q + 1]);
      }
      // r[0..3]: rows 0-3 and r[4..7]: rows 4-7, columns in pairs of lanes.
      r[0] = _mm256_shuffle_ps(t[0], t[2], _MM_SHUFFLE(1, 0, 1, 0));
      r[1] = _mm256_shuffle_ps(t[0], t[2], _MM_SHUFFLE(3, 2, 3, 2));
      r[2] = _mm256_shuffle_ps(t[1], t[3], _MM_SHUFFLE(1, 0, 1, 0));
      r[3] = _mm256_shuffle_ps(t[1], t[3], _MM_SHUFFLE(3, 2, 3, 2));
      r[4] = _mm256_shuffle_ps(t[4], t[6], _MM_SHUFFLE(1, 0, 1, 0));
      r[5] = _mm256_shuffle_ps(t[4], t[6], _MM_SHUFFLE(3, 2, 3, 2));
      r[6] = _mm256_shuffle_ps(t[5], t[7], _MM_SHUFFLE(1, 0, 1, 0));
      r[7] = _mm256_shuffle_ps(t[5], t[7], _MM_SHUFFLE(3, 2, 3, 2));
      for (int q = 0; q < 4; ++q) {
        _mm256_storeu_ps(to + (p + q) * ldTo + j,
                         _mm256_permute2f128_ps(r[q], r[q + 4], 0x20));
        _mm256_storeu_ps(to + (p + q + 4) * ldTo + j,
                         _mm256_permute2f128_ps(r[q], r[q + 4], 0x31));
      }
    }
  for (int32_t j = 0; j < rows; ++j)
    for (int32_t p = j < wholeRows ? wholeCols : 0; p < cols; ++p)
      to[p * ldTo + j] = from[j * ldFrom + p];
}

/// The small-GEMM kernel: register tiles over C, reading op(A) in place. B
/// is read in place too where it is not transposed, except for a last block
/// of fewer than kTileCols columns, which is copied into a zero-padded
/// block; B transposed is transposed once into a block on the stack (in L1).
__attribute__((target("avx2,fma"))) void
multiplySmall(bool transA, bool transB, int32_t m, int32_t n, int32_t k,
              float alpha, const float *a, int32_t lda, const float *b,
              int32_t ldb, float beta, float *c, int32_t ldc) {
  alignas(32) float packed[momac::cpu::kSmallGemmPacked];
  // op(B)'s columns [wholeN, n), zero-padded to a whole tile, in `packed`.
  const int32_t packedN = packedColumns(transB, n);
  const int32_t wholeN = roundUp(n) - packedN;
  if (transB) {
    transposeInto(b, ldb, n, k, packed, packedN);
  } else {
    for (int32_t p = 0; p < k; ++p)
      std::copy(b + int64_t(p) * ldb + wholeN, b + int64_t(p) * ldb + n,
                packed + int64_t(p) * packedN);
  }
  for (int32_t p = 0; p < k; ++p)
    std::fill(packed + int64_t(p) * packedN + (n - wholeN),
              packed + int64_t(p + 1) * packedN, 0.0f);
  const int64_t rowStride = transA ? 1 : lda, depthStride = transA ? lda : 1;
  using Tile = void (*)(int32_t, const float *, int64_t, int64_t, const float *,
                        int64_t, int32_t, float, float, float *, int32_t);
  static constexpr Tile tiles[kTileRows] = {registerTile<1>, registerTile<2>,
                                            registerTile<3>, registerTile<4>,
                                            registerTile<5>, registerTile<6>};
  for (int32_t j0 = 0; j0 < n; j0 += kTileCols) {
    const int32_t cols = std::min(kTileCols, n - j0);
    const bool inPlace = j0 < wholeN;
    const float *bp = inPlace ? b + j0 : packed + (j0 - wholeN);
    const int64_t ldbp = inPlace ? ldb : packedN;
    for (int32_t i0 = 0; i0 < m; i0 += kTileRows) {
      const int32_t rows = std::min(kTileRows, m - i0);
      tiles[rows - 1](k, a + i0 * rowStride, rowStride, depthStride, bp, ldbp,
                      cols, alpha, beta, c + int64_t(i0) * ldc + j0, ldc);
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

bool momac::cpu::smallGemm(bool transA, bool transB, int32_t m, int32_t n,
                           int32_t k, float alpha, const float *a, int32_t lda,
                           const float *b, int32_t ldb, float beta, float *c,
                           int32_t ldc) {
  if (!hasAvx2Fma() || m < 1 || n < 1 || k < 1 || m > kSmallGemmMaxRows ||
      n > kSmallGemmMaxRows || k > kSmallGemmMaxDepth ||
      int64_t(k) * packedColumns(transB, n) > kSmallGemmPacked)
    return false;
  multiplySmall(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  return true;
}

extern "C" void momart_sgemm(int32_t order, int32_t transA, int32_t transB,
                             int32_t m, int32_t n, int32_t k, float alpha,
                             const float *a, int32_t lda, const float *b,
                             int32_t ldb, float beta, float *c, int32_t ldc) {
  // The kernels take what compiled code passes: row major, NoTrans or Trans,
  // alpha != 0 (BLAS reads neither A nor B for alpha = 0; they would).
  const bool ours = order == CblasRowMajor && alpha != 0.0f &&
                    (transA == CblasNoTrans || transA == CblasTrans) &&
                    (transB == CblasNoTrans || transB == CblasTrans);
  if (ours && transA == CblasNoTrans && transB == CblasTrans &&
      momac::cpu::fewRowsTimesTransposed(m, n, k, alpha, a, lda, b, ldb, beta,
                                         c, ldc))
    return;
  if (ours &&
      momac::cpu::smallGemm(transA == CblasTrans, transB == CblasTrans, m, n, k,
                            alpha, a, lda, b, ldb, beta, c, ldc))
    return;
  cblas_sgemm(CblasRowMajor, CBLAS_TRANSPOSE(transA), CBLAS_TRANSPOSE(transB),
              m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
