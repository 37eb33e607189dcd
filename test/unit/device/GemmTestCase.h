//===- GemmTestCase.h - Shapes and a double reference for GEMM units -*- C++
//-*-===//
//
// The runtime's GEMMs (momart_sgemm, momart_gemm_bf16) take cblas_sgemm's
// arguments; their units run the same kind of case (transposes, beta,
// sizes, padded leading dimensions) and check C against sums in double.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_TEST_UNIT_DEVICE_GEMMTESTCASE_H
#define MOMAC_TEST_UNIT_DEVICE_GEMMTESTCASE_H

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace momac::testing {

constexpr int32_t kRowMajor = 101, kNoTrans = 111, kTrans = 112;

struct GemmCase {
  bool transA, transB;
  float beta;
  int32_t m, n, k, pad; // pad: extra leading-dimension elements

  // A is [m, k] (or [k, m] when transposed), B is [k, n] (or [n, k]), C is
  // [m, n]; all row-major with `pad` more elements per row.
  int32_t aRows() const { return transA ? k : m; }
  int32_t bRows() const { return transB ? n : k; }
  int32_t lda() const { return (transA ? m : k) + pad; }
  int32_t ldb() const { return (transB ? k : n) + pad; }
  int32_t ldc() const { return n + pad; }
  int32_t cblasTransA() const { return transA ? kTrans : kNoTrans; }
  int32_t cblasTransB() const { return transB ? kTrans : kNoTrans; }
};

/// How gtest prints a case (and ctest lists it).
inline void PrintTo(const GemmCase &c, std::ostream *os) {
  *os << (c.transA ? "T" : "N") << (c.transB ? "T" : "N") << " beta " << c.beta
      << " " << c.m << "x" << c.n << "x" << c.k << " pad " << c.pad;
}

/// A case's name in the test list: NT_beta1_4x129x100_pad0.
inline std::string
gemmCaseName(const ::testing::TestParamInfo<GemmCase> &info) {
  const GemmCase &c = info.param;
  return std::string(c.transA ? "T" : "N") + (c.transB ? "T" : "N") + "_beta" +
         std::to_string(int(c.beta)) + "_" + std::to_string(c.m) + "x" +
         std::to_string(c.n) + "x" + std::to_string(c.k) + "_pad" +
         std::to_string(c.pad);
}

/// Checks `result` (C after the call; `before`, C before it) against
/// beta C + op(A) op(B) summed in double, with A's and B's elements read
/// by `value`. `tolerance(magnitude, old)` is the error allowed where the
/// products' absolute values sum to `magnitude` and C held `old`. The
/// padding of C's rows must be untouched.
template <typename Element, typename Value, typename Tolerance>
void expectDoubleSums(const GemmCase &c, const std::vector<Element> &a,
                      const std::vector<Element> &b,
                      const std::vector<float> &before,
                      const std::vector<float> &result, Value value,
                      Tolerance tolerance) {
  const size_t lda = c.lda(), ldb = c.ldb(), ldc = c.ldc();
  for (int32_t i = 0; i < c.m; ++i)
    for (int32_t j = 0; j < c.n; ++j) {
      // beta = 0: C is not read (BLAS), whatever it held (NaN included).
      double old = c.beta == 0.0f ? 0.0 : before[i * ldc + j];
      double sum = c.beta * old, magnitude = 0;
      for (int32_t p = 0; p < c.k; ++p) {
        double x = value(c.transA ? a[p * lda + i] : a[i * lda + p]);
        double y = value(c.transB ? b[j * ldb + p] : b[p * ldb + j]);
        sum += x * y;
        magnitude += std::fabs(x * y);
      }
      EXPECT_NEAR(result[i * ldc + j], sum, tolerance(magnitude, old))
          << "at (" << i << ", " << j << ")";
    }
  for (int32_t i = 0; i < c.m; ++i)
    for (int32_t j = c.n; j < int32_t(ldc); ++j)
      EXPECT_EQ(result[i * ldc + j], before[i * ldc + j]);
}

} // namespace momac::testing

#endif // MOMAC_TEST_UNIT_DEVICE_GEMMTESTCASE_H
