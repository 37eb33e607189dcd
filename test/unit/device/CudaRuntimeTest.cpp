//===- CudaRuntimeTest.cpp - The CUDA runtime's paths that need no GPU ----===//
//
// Built where CUDA is; runs anywhere. Without a driver or GPU every call is
// safe and says why it did nothing; with one (the GPU bundle's run.sh), the
// same tests see a ready device.
//
//===----------------------------------------------------------------------===//

#include "runtime/device/cuda/CudaRuntime.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

namespace {

bool haveGpu() { return momart_cuda_status() == nullptr; }

TEST(CudaRuntimeTest, StatusSaysWhyThereIsNoGpu) {
  const char *status = momart_cuda_status();
  if (!status) {
    char name[128] = {0};
    size_t total = 0;
    EXPECT_TRUE(momart_cuda_device(name, sizeof(name), &total));
    EXPECT_GT(total, 0u);
    return;
  }
  std::string why = status;
  EXPECT_TRUE(why.find("no NVIDIA driver") != std::string::npos ||
              why.find("no CUDA device") != std::string::npos ||
              why.find("CUDA driver") != std::string::npos)
      << why;
  EXPECT_EQ(why.find('\n'), std::string::npos) << "one line: " << why;
  EXPECT_FALSE(momart_cuda_device(nullptr, 0, nullptr));
}

// Without a GPU nothing is allocated, launched or copied, and nothing
// crashes; a host read gives zeros.
TEST(CudaRuntimeTest, CallsWithoutAGpuDoNothing) {
  if (haveGpu())
    GTEST_SKIP() << "a GPU is present";
  EXPECT_EQ(momart_cuda_alloc(1024), nullptr);
  EXPECT_EQ(mgpuMemAlloc(1024, mgpuStreamCreate(), false), nullptr);
  EXPECT_EQ(mgpuModuleLoad(nullptr, 0), nullptr);
  EXPECT_EQ(mgpuModuleGetFunction(nullptr, "kernel"), nullptr);
  mgpuLaunchKernel(nullptr, 1, 1, 1, 128, 1, 1, 0, nullptr, nullptr, nullptr,
                   0);
  int64_t host[2] = {7, 7};
  momart_cuda_read_to_host(host, nullptr, sizeof(host));
  EXPECT_EQ(host[0], 0);
  EXPECT_EQ(host[1], 0);
  momart_cuda_gemm_f32(0, 0, 4, 4, 4, nullptr, 4, 0, nullptr, 4, 0, 0.0f,
                       nullptr, 4, 0, 1);
  momart_select_smallest_i64(nullptr, 1, 8, 2);
  momart_cuda_free(nullptr);
  mgpuStreamSynchronize(mgpuStreamCreate());
  size_t inUse = 1, cached = 1, peak = 1;
  momart_cuda_memory(&inUse, &cached, &peak);
  EXPECT_EQ(inUse, 0u);
  EXPECT_EQ(peak, 0u);
  EXPECT_EQ(momart_cuda_take_error(), nullptr);
}

// With a GPU: a copy round trip, and the GEMM's row-major contract against
// a host product (TF32 off: exact for small integers).
TEST(CudaRuntimeTest, GemmMatchesTheHost) {
  if (!haveGpu())
    GTEST_SKIP() << momart_cuda_status();
  const int m = 3, n = 5, k = 4;
  std::vector<float> a(m * k), b(k * n), c(m * n, 1.0f), expected(m * n);
  for (int i = 0; i < m * k; ++i)
    a[i] = float(i % 7 - 3);
  for (int i = 0; i < k * n; ++i)
    b[i] = float(i % 5 - 2);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      float sum = 1.0f; // beta = 1 on C = 1
      for (int p = 0; p < k; ++p)
        sum += a[i * k + p] * b[p * n + j];
      expected[i * n + j] = sum;
    }
  auto *da = static_cast<float *>(momart_cuda_alloc(a.size() * 4));
  auto *db = static_cast<float *>(momart_cuda_alloc(b.size() * 4));
  auto *dc = static_cast<float *>(momart_cuda_alloc(c.size() * 4));
  momart_cuda_copy_to_device(da, a.data(), a.size() * 4);
  momart_cuda_copy_to_device(db, b.data(), b.size() * 4);
  momart_cuda_copy_to_device(dc, c.data(), c.size() * 4);
  momart_cuda_gemm_f32(0, 0, m, n, k, da, k, 0, db, n, 0, 1.0f, dc, n, 0, 1);
  momart_cuda_copy_to_host(c.data(), dc, c.size() * 4);
  EXPECT_EQ(momart_cuda_take_error(), nullptr);
  EXPECT_EQ(c, expected);
  momart_cuda_free(da);
  momart_cuda_free(db);
  momart_cuda_free(dc);
}

/// A strided batch of row-major products on the GPU against the host:
/// C[b] = op(A[b]) op(B[b]) + beta C[b] with C's leading dimension wider
/// than n (the columns past n must stay untouched), operands small
/// integers so that f32 and bf16 products are exact.
void checkBatchedGemm(bool transA, bool transB, int m, int n, int k,
                      int batch, float beta, bool bf16, float cFill) {
  SCOPED_TRACE(testing::Message()
               << "transA=" << transA << " transB=" << transB << " m=" << m
               << " n=" << n << " k=" << k << " batch=" << batch
               << " beta=" << beta << " bf16=" << bf16 << " C=" << cFill);
  const int lda = transA ? m : k, ldb = transB ? k : n, ldc = n + 3;
  const int64_t strideA = int64_t(m) * k + 5, strideB = int64_t(k) * n + 7,
                strideC = int64_t(m) * ldc + 2;
  std::vector<float> a(strideA * batch), b(strideB * batch),
      c(strideC * batch, cFill);
  for (size_t i = 0; i < a.size(); ++i)
    a[i] = float(int(i % 7) - 3);
  for (size_t i = 0; i < b.size(); ++i)
    b[i] = float(int(i % 5) - 2);
  std::vector<float> expected = c;
  for (int t = 0; t < batch; ++t)
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        float sum = 0;
        for (int p = 0; p < k; ++p)
          sum += a[t * strideA + (transA ? p * lda + i : i * lda + p)] *
                 b[t * strideB + (transB ? j * ldb + p : p * ldb + j)];
        float &out = expected[t * strideC + i * ldc + j];
        out = beta == 0 ? sum : sum + beta * out;
      }
  auto toBf16 = [](const std::vector<float> &values) {
    std::vector<uint16_t> bits(values.size());
    for (size_t i = 0; i < values.size(); ++i) {
      uint32_t word;
      std::memcpy(&word, &values[i], 4);
      bits[i] = uint16_t(word >> 16); // small integers: exact
    }
    return bits;
  };
  const size_t element = bf16 ? 2 : 4;
  void *da = momart_cuda_alloc(std::max<size_t>(a.size() * element, 1));
  void *db = momart_cuda_alloc(std::max<size_t>(b.size() * element, 1));
  auto *dc = static_cast<float *>(momart_cuda_alloc(c.size() * 4));
  momart_cuda_copy_to_device(dc, c.data(), c.size() * 4);
  if (bf16) {
    std::vector<uint16_t> a16 = toBf16(a), b16 = toBf16(b);
    momart_cuda_copy_to_device(da, a16.data(), a16.size() * 2);
    momart_cuda_copy_to_device(db, b16.data(), b16.size() * 2);
    momart_cuda_gemm_bf16(transA, transB, m, n, k,
                          static_cast<const uint16_t *>(da), lda, strideA,
                          static_cast<const uint16_t *>(db), ldb, strideB,
                          beta, dc, ldc, strideC, batch);
  } else {
    momart_cuda_copy_to_device(da, a.data(), a.size() * 4);
    momart_cuda_copy_to_device(db, b.data(), b.size() * 4);
    momart_cuda_gemm_f32(transA, transB, m, n, k,
                         static_cast<const float *>(da), lda, strideA,
                         static_cast<const float *>(db), ldb, strideB, beta,
                         dc, ldc, strideC, batch);
  }
  std::vector<float> got(c.size());
  momart_cuda_copy_to_host(got.data(), dc, got.size() * 4);
  EXPECT_EQ(momart_cuda_take_error(), nullptr);
  for (size_t i = 0; i < got.size(); ++i) {
    bool bothNaN = std::isnan(got[i]) && std::isnan(expected[i]);
    EXPECT_TRUE(bothNaN || got[i] == expected[i])
        << "element " << i << ": " << got[i] << " != " << expected[i];
  }
  momart_cuda_free(da);
  momart_cuda_free(db);
  momart_cuda_free(dc);
}

// Both transposes, strided batches and bf16 operands, as the step's expert
// and attention GEMMs call them.
TEST(CudaRuntimeTest, BatchedGemmsInEveryLayout) {
  if (!haveGpu())
    GTEST_SKIP() << momart_cuda_status();
  for (bool bf16 : {false, true})
    for (bool transA : {false, true})
      for (bool transB : {false, true})
        for (float beta : {0.0f, 1.0f})
          checkBatchedGemm(transA, transB, 5, 6, 7, 3, beta, bf16, 2.0f);
}

// k = 0 (an expert that chose no tokens: dW over an empty list): C = beta C,
// so with beta = 0 a C full of NaN becomes exactly 0, and with beta = 1 it
// stays; the padding columns past n are never touched.
TEST(CudaRuntimeTest, GemmWithNothingToSum) {
  if (!haveGpu())
    GTEST_SKIP() << momart_cuda_status();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (bool bf16 : {false, true}) {
    checkBatchedGemm(false, false, 4, 5, 0, 2, 0.0f, bf16, nan);
    checkBatchedGemm(true, false, 4, 5, 0, 2, 0.0f, bf16, nan);
    checkBatchedGemm(false, true, 4, 5, 0, 2, 1.0f, bf16, 3.0f);
    checkBatchedGemm(false, false, 4, 5, 0, 2, 0.5f, bf16, 3.0f);
  }
}

// With a GPU: top-k keys come out ascending at each row's front.
TEST(CudaRuntimeTest, SelectSortsEachRow) {
  if (!haveGpu())
    GTEST_SKIP() << momart_cuda_status();
  std::vector<int64_t> keys = {5, -1, 9, 3, 8, 2, 7, 1, 0, 6};
  auto *device = static_cast<int64_t *>(momart_cuda_alloc(keys.size() * 8));
  momart_cuda_copy_to_device(device, keys.data(), keys.size() * 8);
  momart_select_smallest_i64(device, 2, 5, 3);
  momart_cuda_copy_to_host(keys.data(), device, keys.size() * 8);
  EXPECT_EQ(momart_cuda_take_error(), nullptr);
  EXPECT_EQ(std::vector<int64_t>(keys.begin(), keys.begin() + 3),
            (std::vector<int64_t>{-1, 3, 5}));
  EXPECT_EQ(std::vector<int64_t>(keys.begin() + 5, keys.begin() + 8),
            (std::vector<int64_t>{0, 1, 2}));
  momart_cuda_free(device);
}

} // namespace
