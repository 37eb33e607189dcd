//===- GemmBf16Test.cpp - momart_gemm_bf16 against a double reference -----===//

#include "runtime/device/cpu/GemmBf16.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <ostream>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr int32_t kRowMajor = 101, kNoTrans = 111, kTrans = 112;

float fromBf16(uint16_t bits) {
  uint32_t word = uint32_t(bits) << 16;
  float value;
  std::memcpy(&value, &word, 4);
  return value;
}

uint16_t toBf16(float value) { // round to nearest even; no NaNs here
  uint32_t word;
  std::memcpy(&word, &value, 4);
  word += 0x7fff + ((word >> 16) & 1);
  return uint16_t(word >> 16);
}

struct Case {
  bool transA, transB;
  float beta;
  int32_t m, n, k, pad; // pad: extra leading-dimension elements
};

/// How gtest prints a case (and ctest lists it).
void PrintTo(const Case &c, std::ostream *os) {
  *os << (c.transA ? "T" : "N") << (c.transB ? "T" : "N") << " beta " << c.beta
      << " " << c.m << "x" << c.n << "x" << c.k << " pad " << c.pad;
}

class GemmBf16 : public ::testing::TestWithParam<Case> {};

TEST_P(GemmBf16, MatchesDoubleSumsOfTheRoundedOperands) {
  const Case c = GetParam();
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  // A is [m, k] (or [k, m] when transposed), B is [k, n] (or [n, k]).
  int32_t aRows = c.transA ? c.k : c.m, aCols = c.transA ? c.m : c.k;
  int32_t bRows = c.transB ? c.n : c.k, bCols = c.transB ? c.k : c.n;
  int32_t lda = aCols + c.pad, ldb = bCols + c.pad, ldc = c.n + c.pad;
  std::vector<uint16_t> a(size_t(aRows) * lda), b(size_t(bRows) * ldb);
  for (uint16_t &x : a)
    x = toBf16(normal(rng));
  for (uint16_t &x : b)
    x = toBf16(normal(rng));
  std::vector<float> cMatrix(size_t(c.m) * ldc);
  for (float &x : cMatrix)
    x = normal(rng);
  std::vector<float> before = cMatrix;

  momart_gemm_bf16(kRowMajor, c.transA ? kTrans : kNoTrans,
                   c.transB ? kTrans : kNoTrans, c.m, c.n, c.k, 1.0f, a.data(),
                   lda, b.data(), ldb, c.beta, cMatrix.data(), ldc);

  for (int32_t i = 0; i < c.m; ++i)
    for (int32_t j = 0; j < c.n; ++j) {
      double sum = c.beta * double(before[size_t(i) * ldc + j]), size = 0;
      for (int32_t p = 0; p < c.k; ++p) {
        double x = fromBf16(c.transA ? a[size_t(p) * lda + i]
                                     : a[size_t(i) * lda + p]);
        double y = fromBf16(c.transB ? b[size_t(j) * ldb + p]
                                     : b[size_t(p) * ldb + j]);
        sum += x * y;
        size += std::fabs(x * y);
      }
      // f32 accumulation: a few ulps of the sum of magnitudes.
      EXPECT_NEAR(cMatrix[size_t(i) * ldc + j], sum, 1e-6 * (size + 1) * 8)
          << "at (" << i << ", " << j << ")";
    }
  // Padding between rows of C is never written.
  for (int32_t i = 0; i < c.m; ++i)
    for (int32_t j = c.n; j < ldc; ++j)
      EXPECT_EQ(cMatrix[size_t(i) * ldc + j], before[size_t(i) * ldc + j]);
}

// The path is decided once and said in words (momarun prints it).
TEST(GemmBf16Path, IsReported) {
  std::string path = momart_gemm_bf16_path();
  EXPECT_TRUE(path.rfind("oneDNN bf16 matmul", 0) == 0 ||
              path.rfind("f32 sgemm on widened operands", 0) == 0)
      << path;
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GemmBf16,
    ::testing::Values(Case{false, false, 0.0f, 17, 33, 65, 0},
                      Case{false, true, 0.0f, 64, 32, 128, 3},
                      Case{true, false, 1.0f, 31, 16, 9, 5},
                      Case{true, true, 1.0f, 8, 40, 100, 1},
                      // An expert that chose no tokens reduces over k = 0.
                      Case{true, false, 0.0f, 12, 10, 0, 2},
                      Case{true, false, 1.0f, 12, 10, 0, 2},
                      Case{false, false, 1.0f, 1, 1, 1, 0}),
    [](const ::testing::TestParamInfo<Case> &info) {
      const Case &c = info.param;
      return std::string(c.transA ? "T" : "N") + (c.transB ? "T" : "N") +
             "_beta" + std::to_string(int(c.beta)) + "_" +
             std::to_string(c.m) + "x" + std::to_string(c.n) + "x" +
             std::to_string(c.k) + "_pad" + std::to_string(c.pad);
    });

} // namespace
