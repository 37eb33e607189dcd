//===- GemmBf16Test.cpp - momart_gemm_bf16 against a double reference -----===//

#include "runtime/device/cpu/GemmBf16.h"
#include "test/unit/device/GemmTestCase.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <ostream>
#include <random>
#include <string>
#include <vector>

namespace {

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

using momac::testing::GemmCase;

class GemmBf16 : public ::testing::TestWithParam<GemmCase> {};

TEST_P(GemmBf16, MatchesDoubleSumsOfTheRoundedOperands) {
  const GemmCase c = GetParam();
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::vector<uint16_t> a(size_t(c.aRows()) * c.lda()),
      b(size_t(c.bRows()) * c.ldb());
  for (uint16_t &x : a)
    x = toBf16(normal(rng));
  for (uint16_t &x : b)
    x = toBf16(normal(rng));
  std::vector<float> cMatrix(size_t(c.m) * c.ldc());
  for (float &x : cMatrix)
    x = normal(rng);
  std::vector<float> before = cMatrix;

  momart_gemm_bf16(momac::testing::kRowMajor, c.cblasTransA(), c.cblasTransB(),
                   c.m, c.n, c.k, 1.0f, a.data(), c.lda(), b.data(), c.ldb(),
                   c.beta, cMatrix.data(), c.ldc());

  // f32 accumulation: a few ulps of the sum of magnitudes.
  momac::testing::expectDoubleSums(
      c, a, b, before, cMatrix, fromBf16,
      [](double magnitude, double) { return 1e-6 * (magnitude + 1) * 8; });
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
    ::testing::Values(GemmCase{false, false, 0.0f, 17, 33, 65, 0},
                      GemmCase{false, true, 0.0f, 64, 32, 128, 3},
                      GemmCase{true, false, 1.0f, 31, 16, 9, 5},
                      GemmCase{true, true, 1.0f, 8, 40, 100, 1},
                      // An expert that chose no tokens reduces over k = 0.
                      GemmCase{true, false, 0.0f, 12, 10, 0, 2},
                      GemmCase{true, false, 1.0f, 12, 10, 0, 2},
                      GemmCase{false, false, 1.0f, 1, 1, 1, 0}),
    momac::testing::gemmCaseName);

} // namespace
