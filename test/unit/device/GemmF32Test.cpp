//===- GemmF32Test.cpp - momart_sgemm against a double reference ----------===//

#include "runtime/device/cpu/GemmF32.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace {

constexpr int32_t kRowMajor = 101, kNoTrans = 111, kTrans = 112;

struct Case {
  bool transA, transB;
  float beta;
  int32_t m, n, k, pad; // pad: extra leading-dimension elements
};

void PrintTo(const Case &c, std::ostream *os) {
  *os << (c.transA ? "T" : "N") << (c.transB ? "T" : "N") << " beta " << c.beta
      << " " << c.m << "x" << c.n << "x" << c.k << " pad " << c.pad;
}

class GemmF32 : public ::testing::TestWithParam<Case> {};

/// Every shape, transposes and beta, through whichever path momart_sgemm
/// takes (the few-row kernel for m <= 8, NT; OpenBLAS otherwise), against
/// sums in double: within f32 rounding of the sum of |products|.
TEST_P(GemmF32, MatchesDoubleSums) {
  const Case c = GetParam();
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  int32_t aRows = c.transA ? c.k : c.m, aCols = c.transA ? c.m : c.k;
  int32_t bRows = c.transB ? c.n : c.k, bCols = c.transB ? c.k : c.n;
  int32_t lda = aCols + c.pad, ldb = bCols + c.pad, ldc = c.n + c.pad;
  std::vector<float> a(size_t(aRows) * lda), b(size_t(bRows) * ldb),
      cMatrix(size_t(c.m) * ldc);
  for (float &x : a)
    x = normal(rng);
  for (float &x : b)
    x = normal(rng);
  for (float &x : cMatrix)
    x = normal(rng);
  std::vector<float> before = cMatrix;
  momart_sgemm(kRowMajor, c.transA ? kTrans : kNoTrans,
               c.transB ? kTrans : kNoTrans, c.m, c.n, c.k, 1.0f, a.data(), lda,
               b.data(), ldb, c.beta, cMatrix.data(), ldc);
  for (int32_t i = 0; i < c.m; ++i)
    for (int32_t j = 0; j < c.n; ++j) {
      double sum = 0, magnitude = 0;
      for (int32_t p = 0; p < c.k; ++p) {
        double x = c.transA ? a[size_t(p) * lda + i] : a[size_t(i) * lda + p];
        double y = c.transB ? b[size_t(j) * ldb + p] : b[size_t(p) * ldb + j];
        sum += x * y;
        magnitude += std::fabs(x * y);
      }
      double expected = sum + c.beta * before[size_t(i) * ldc + j];
      EXPECT_NEAR(cMatrix[size_t(i) * ldc + j], expected,
                  1e-6 * (magnitude + std::fabs(before[size_t(i) * ldc + j])) +
                      1e-30)
          << "at " << i << ", " << j;
    }
  // Padding columns of C are not written.
  for (int32_t i = 0; i < c.m; ++i)
    for (int32_t j = c.n; j < ldc; ++j)
      EXPECT_EQ(cMatrix[size_t(i) * ldc + j], before[size_t(i) * ldc + j]);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GemmF32,
    ::testing::Values(
        // Few rows against a weight matrix (decoding): the few-row kernel,
        // k with and without a tail of less than 8, every row count.
        Case{false, true, 0.0f, 1, 37, 64, 0}, Case{false, true, 1.0f, 2, 33, 61, 3},
        Case{false, true, 0.0f, 3, 40, 512, 5}, Case{false, true, 1.0f, 4, 129, 100, 0},
        Case{false, true, 0.0f, 5, 17, 7, 1}, Case{false, true, 0.0f, 6, 8, 9, 0},
        Case{false, true, 1.0f, 7, 65, 128, 2}, Case{false, true, 0.0f, 8, 300, 344, 0},
        // OpenBLAS: more rows, or other transposes.
        Case{false, true, 0.0f, 9, 33, 64, 0}, Case{false, false, 1.0f, 4, 33, 64, 2},
        Case{true, true, 0.0f, 4, 20, 30, 1}, Case{false, true, 1.0f, 64, 48, 96, 0}));

TEST(GemmF32, FewRowKernelRunsWhereTheCpuHasAvx2AndFma) {
  float a[8] = {1, 2, 3, 4, 5, 6, 7, 8}, b[8] = {1, 1, 1, 1, 1, 1, 1, 1}, c = 0;
  bool ran = momac::cpu::fewRowsTimesTransposed(1, 1, 8, 1.0f, a, 8, b, 8, 0.0f,
                                                &c, 1);
  EXPECT_EQ(ran, __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"));
  if (ran)
    EXPECT_EQ(c, 36.0f);
}

} // namespace
