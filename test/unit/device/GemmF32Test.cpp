//===- GemmF32Test.cpp - momart_sgemm against a double reference ----------===//

#include "runtime/device/cpu/GemmF32.h"
#include "test/unit/device/GemmTestCase.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace {

using momac::testing::GemmCase;

/// Runs `gemm` (C = op(A) op(B) + beta C, alpha 1) on case `c` with normal
/// random operands and checks it against sums in double: within f32
/// rounding of the sum of |products|. With `nanWhereNotRead`, C's elements
/// start as NaN where beta = 0 (a GEMM must not read them).
template <typename Gemm>
void expectMatchesDoubleSums(const GemmCase &c, Gemm gemm,
                             bool nanWhereNotRead = false) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<float> a(size_t(c.aRows()) * c.lda()),
      b(size_t(c.bRows()) * c.ldb()), cMatrix(size_t(c.m) * c.ldc());
  for (float &x : a)
    x = normal(rng);
  for (float &x : b)
    x = normal(rng);
  for (float &x : cMatrix)
    x = normal(rng);
  if (nanWhereNotRead && c.beta == 0.0f)
    for (int32_t i = 0; i < c.m; ++i)
      std::fill_n(cMatrix.begin() + size_t(i) * c.ldc(), c.n, std::nanf(""));
  std::vector<float> before = cMatrix;
  gemm(a.data(), b.data(), cMatrix.data());
  momac::testing::expectDoubleSums(
      c, a, b, before, cMatrix, [](float x) { return double(x); },
      [](double magnitude, double old) {
        return 1e-6 * (magnitude + std::fabs(old)) + 1e-30;
      });
}

bool hasAvx2Fma() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

class GemmF32 : public ::testing::TestWithParam<GemmCase> {};

/// Every shape, transposes and beta, through whichever path momart_sgemm
/// takes (the few-row kernel for m <= 8, NT; the small-GEMM kernel within
/// its bounds; OpenBLAS otherwise).
TEST_P(GemmF32, MatchesDoubleSums) {
  const GemmCase c = GetParam();
  expectMatchesDoubleSums(c, [&](const float *a, const float *b, float *out) {
    momart_sgemm(momac::testing::kRowMajor, c.cblasTransA(), c.cblasTransB(),
                 c.m, c.n, c.k, 1.0f, a, c.lda(), b, c.ldb(), c.beta, out,
                 c.ldc());
  });
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GemmF32,
    ::testing::Values(
        // Few rows against a weight matrix (decoding): the few-row kernel,
        // k with and without a tail of less than 8, every row count.
        GemmCase{false, true, 0.0f, 1, 37, 64, 0},
        GemmCase{false, true, 1.0f, 2, 33, 61, 3},
        GemmCase{false, true, 0.0f, 3, 40, 512, 5},
        GemmCase{false, true, 1.0f, 4, 129, 100, 0},
        GemmCase{false, true, 0.0f, 5, 17, 7, 1},
        GemmCase{false, true, 0.0f, 6, 8, 9, 0},
        GemmCase{false, true, 1.0f, 7, 65, 128, 2},
        GemmCase{false, true, 0.0f, 8, 300, 344, 0},
        // More rows, or other transposes: the small-GEMM kernel.
        GemmCase{false, true, 0.0f, 9, 33, 64, 0},
        GemmCase{false, false, 1.0f, 4, 33, 64, 2},
        GemmCase{true, true, 0.0f, 4, 20, 30, 1},
        GemmCase{false, true, 1.0f, 64, 48, 96, 0},
        // Beyond its bounds (rows, depth, B to transpose): OpenBLAS.
        GemmCase{false, false, 0.0f, 129, 20, 30, 0},
        GemmCase{true, false, 1.0f, 40, 24, 600, 1},
        GemmCase{false, true, 0.0f, 64, 128, 100, 0}),
    momac::testing::gemmCaseName);

class SmallGemm : public ::testing::TestWithParam<GemmCase> {};

/// The small-GEMM kernel itself: every transpose, every remainder of rows
/// (1 to 5 past a whole register tile of 6) and of columns (a last block of
/// fewer than 16, read in place or copied), padded leading dimensions.
TEST_P(SmallGemm, MatchesDoubleSums) {
  if (!hasAvx2Fma())
    GTEST_SKIP() << "no AVX2 and FMA: momart_sgemm never takes this kernel";
  const GemmCase c = GetParam();
  expectMatchesDoubleSums(
      c,
      [&](const float *a, const float *b, float *out) {
        ASSERT_TRUE(momac::cpu::smallGemm(c.transA, c.transB, c.m, c.n, c.k,
                                          1.0f, a, c.lda(), b, c.ldb(), c.beta,
                                          out, c.ldc()));
      },
      /*nanWhereNotRead=*/true);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, SmallGemm,
    ::testing::Values(
        // One head's attention tiles (64 rows, head dimension 32).
        GemmCase{false, true, 0.0f, 64, 64, 32, 0},
        GemmCase{false, false, 1.0f, 64, 32, 64, 0},
        GemmCase{true, false, 1.0f, 64, 32, 64, 0},
        GemmCase{true, true, 0.0f, 64, 64, 32, 0},
        // Rows 1..5 past whole tiles (and none), columns past whole blocks
        // (and none; every column copied).
        GemmCase{false, false, 0.0f, 1, 17, 5, 1},
        GemmCase{false, false, 0.0f, 5, 7, 9, 0},
        GemmCase{true, false, 1.0f, 12, 16, 10, 2},
        GemmCase{false, true, 1.0f, 8, 3, 9, 2},
        GemmCase{true, false, 0.0f, 15, 40, 7, 3},
        GemmCase{true, true, 1.0f, 22, 31, 12, 0},
        GemmCase{false, false, 1.0f, 29, 48, 33, 4},
        GemmCase{false, true, 0.0f, 37, 50, 32, 1},
        // The bounds: 128 rows and columns; depth 512.
        GemmCase{false, true, 1.0f, 128, 128, 64, 0},
        GemmCase{false, false, 0.0f, 7, 16, 512, 0}),
    momac::testing::gemmCaseName);

TEST(GemmF32, SmallGemmScalesByAlphaAndBeta) {
  if (!hasAvx2Fma())
    GTEST_SKIP() << "no AVX2 and FMA: momart_sgemm never takes this kernel";
  // C[3, 20] = 0.25 * A[3, 2] B[20, 2]^T, beta 0 (C starts as NaN): B
  // transposed, a whole block and a partial one.
  {
    std::vector<float> a = {1, 2, 3, 4, 5, 6}, b(20 * 2),
                       c(3 * 20, std::nanf(""));
    for (size_t i = 0; i < b.size(); ++i)
      b[i] = float(i % 5);
    ASSERT_TRUE(momac::cpu::smallGemm(false, true, 3, 20, 2, 0.25f, a.data(), 2,
                                      b.data(), 2, 0.0f, c.data(), 20));
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 20; ++j)
        EXPECT_EQ(c[i * 20 + j],
                  0.25f * (a[i * 2] * b[j * 2] + a[i * 2 + 1] * b[j * 2 + 1]))
            << i << ", " << j;
  }
  // C[2, 18] = 0.5 * A[2, 3] B[3, 18] + 2 C: a whole block and a partial one.
  std::vector<float> a = {1, 2, 3, 4, 5, 6}, b(3 * 18), c(2 * 18, 1.0f);
  for (size_t i = 0; i < b.size(); ++i)
    b[i] = float(i % 7);
  ASSERT_TRUE(momac::cpu::smallGemm(false, false, 2, 18, 3, 0.5f, a.data(), 3,
                                    b.data(), 18, 2.0f, c.data(), 18));
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 18; ++j) {
      float sum = 0;
      for (int p = 0; p < 3; ++p)
        sum += a[i * 3 + p] * b[p * 18 + j];
      EXPECT_EQ(c[i * 18 + j], 0.5f * sum + 2.0f) << i << ", " << j;
    }
}

TEST(GemmF32, SmallGemmDeclinesBeyondItsBounds) {
  std::vector<float> a(130 * 600, 1.0f), b(600 * 130, 1.0f), c(130 * 130);
  // 129 rows; 129 columns; depth 513; B transposed of 128 x 128 (more
  // than 8192 floats).
  EXPECT_FALSE(momac::cpu::smallGemm(false, false, 129, 16, 8, 1.0f, a.data(),
                                     8, b.data(), 16, 0.0f, c.data(), 16));
  EXPECT_FALSE(momac::cpu::smallGemm(false, false, 8, 129, 8, 1.0f, a.data(), 8,
                                     b.data(), 129, 0.0f, c.data(), 129));
  EXPECT_FALSE(momac::cpu::smallGemm(false, false, 8, 16, 513, 1.0f, a.data(),
                                     513, b.data(), 16, 0.0f, c.data(), 16));
  EXPECT_FALSE(momac::cpu::smallGemm(false, true, 8, 128, 128, 1.0f, a.data(),
                                     128, b.data(), 128, 0.0f, c.data(), 128));
  // Not transposed, the same B is read in place: within bounds.
  EXPECT_EQ(momac::cpu::smallGemm(false, false, 8, 128, 128, 1.0f, a.data(),
                                  128, b.data(), 128, 0.0f, c.data(), 128),
            hasAvx2Fma());
}

TEST(GemmF32, FewRowKernelRunsWhereTheCpuHasAvx2AndFma) {
  float a[8] = {1, 2, 3, 4, 5, 6, 7, 8}, b[8] = {1, 1, 1, 1, 1, 1, 1, 1}, c = 0;
  bool ran = momac::cpu::fewRowsTimesTransposed(1, 1, 8, 1.0f, a, 8, b, 8, 0.0f,
                                                &c, 1);
  EXPECT_EQ(ran, hasAvx2Fma());
  if (ran)
    EXPECT_EQ(c, 36.0f);
}

} // namespace
