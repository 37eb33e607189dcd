//===- CudaRuntimeTest.cpp - The CUDA runtime's paths that need no GPU ----===//
//
// Built where CUDA is; runs anywhere. Without a driver or GPU every call is
// safe and says why it did nothing; with one (scripts/gpu-check.sh), the
// same tests see a ready device.
//
//===----------------------------------------------------------------------===//

#include "runtime/device/cuda/CudaRuntime.h"

#include <gtest/gtest.h>

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
