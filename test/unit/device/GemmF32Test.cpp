//===- GemmF32Test.cpp - momart_sgemm against a double reference ----------===//

#include "runtime/device/cpu/GemmF32.h"
#include "test/unit/device/GemmTestCase.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace {

using momac::testing::GemmCase;

class GemmF32 : public ::testing::TestWithParam<GemmCase> {};

/// Every shape, transposes and beta, through whichever path momart_sgemm
/// takes (the few-row kernel for m <= 8, NT; OpenBLAS otherwise), against
/// sums in double: within f32 rounding of the sum of |products|.
TEST_P(GemmF32, MatchesDoubleSums) {
  const GemmCase c = GetParam();
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
  std::vector<float> before = cMatrix;
  momart_sgemm(momac::testing::kRowMajor, c.cblasTransA(), c.cblasTransB(), c.m,
               c.n, c.k, 1.0f, a.data(), c.lda(), b.data(), c.ldb(), c.beta,
               cMatrix.data(), c.ldc());
  momac::testing::expectDoubleSums(
      c, a, b, before, cMatrix, [](float x) { return double(x); },
      [](double magnitude, double old) {
        return 1e-6 * (magnitude + std::fabs(old)) + 1e-30;
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
        // OpenBLAS: more rows, or other transposes.
        GemmCase{false, true, 0.0f, 9, 33, 64, 0},
        GemmCase{false, false, 1.0f, 4, 33, 64, 2},
        GemmCase{true, true, 0.0f, 4, 20, 30, 1},
        GemmCase{false, true, 1.0f, 64, 48, 96, 0}),
    momac::testing::gemmCaseName);

TEST(GemmF32, FewRowKernelRunsWhereTheCpuHasAvx2AndFma) {
  float a[8] = {1, 2, 3, 4, 5, 6, 7, 8}, b[8] = {1, 1, 1, 1, 1, 1, 1, 1}, c = 0;
  bool ran = momac::cpu::fewRowsTimesTransposed(1, 1, 8, 1.0f, a, 8, b, 8, 0.0f,
                                                &c, 1);
  EXPECT_EQ(ran, __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"));
  if (ran)
    EXPECT_EQ(c, 36.0f);
}

} // namespace
