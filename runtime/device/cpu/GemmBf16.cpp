//===- GemmBf16.cpp - bf16 GEMM with f32 accumulation (oneDNN) ------------===//
//
// One oneDNN matmul primitive per (transposes, beta) with every size and
// leading dimension given at run time: the token counts of expert choice
// and MoD change from batch to batch, and a primitive per shape would cost
// a JIT compile per new shape. oneDNN serves such runtime shapes with its
// JIT bf16 GEMM, which runs as fast as the shape-specialized kernels on the
// shapes of a MoMa step (measured: bench/README.md).
//
//===----------------------------------------------------------------------===//

#include "runtime/device/cpu/GemmBf16.h"

#include <oneapi/dnnl/dnnl.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>

namespace {

constexpr int32_t kRowMajor = 101, kNoTrans = 111, kTrans = 112;

[[noreturn]] void fail(const char *what, int32_t m, int32_t n, int32_t k) {
  std::fprintf(stderr, "momart_gemm_bf16 (m %d, n %d, k %d): %s\n", m, n, k,
               what);
  std::abort();
}

using dnnl::memory;

/// A row-major [rows, cols] matrix, or a transposed one (column-major),
/// with a leading dimension: its layout as oneDNN strides.
memory::dims stridesOf(bool transposed, memory::dim leading) {
  return transposed ? memory::dims{1, leading} : memory::dims{leading, 1};
}

/// The primitives of one thread: oneDNN primitives may be shared across
/// threads, but engines, streams and memory objects are cheaper to keep
/// per thread than to lock.
struct ThreadGemms {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  // [transA][transB][accumulate]
  std::optional<dnnl::matmul> primitives[2][2][2];

  dnnl::matmul &get(bool transA, bool transB, bool accumulate) {
    std::optional<dnnl::matmul> &slot = primitives[transA][transB][accumulate];
    if (!slot) {
      const memory::dim any = DNNL_RUNTIME_DIM_VAL;
      memory::desc a({any, any}, memory::data_type::bf16,
                     stridesOf(transA, any));
      memory::desc b({any, any}, memory::data_type::bf16,
                     stridesOf(transB, any));
      memory::desc c({any, any}, memory::data_type::f32, {any, 1});
      dnnl::primitive_attr attr;
      if (accumulate) {
        dnnl::post_ops ops;
        ops.append_sum(1.0f);
        attr.set_post_ops(ops);
      }
      dnnl::matmul::primitive_desc desc(dnnl::matmul::desc(a, b, c), attr,
                                        engine);
      slot.emplace(desc);
    }
    return *slot;
  }
};

} // namespace

extern "C" void momart_gemm_bf16(int32_t order, int32_t transA,
                                 int32_t transB, int32_t m, int32_t n,
                                 int32_t k, float alpha, const uint16_t *a,
                                 int32_t lda, const uint16_t *b, int32_t ldb,
                                 float beta, float *c, int32_t ldc) {
  if (order != kRowMajor || (transA != kNoTrans && transA != kTrans) ||
      (transB != kNoTrans && transB != kTrans))
    fail("only row-major C and CblasNoTrans/CblasTrans are supported", m, n,
         k);
  if (alpha != 1.0f || (beta != 0.0f && beta != 1.0f))
    fail("alpha must be 1 and beta 0 or 1", m, n, k);
  if (m < 0 || n < 0 || k < 0)
    fail("negative size", m, n, k);
  if (m == 0 || n == 0)
    return;
  bool accumulate = beta == 1.0f;
  if (k == 0) {
    // An empty sum: C stays (beta 1) or becomes 0 (beta 0).
    if (!accumulate)
      for (int32_t row = 0; row < m; ++row)
        std::memset(c + int64_t(row) * ldc, 0, sizeof(float) * n);
    return;
  }
  try {
    thread_local ThreadGemms gemms;
    bool ta = transA == kTrans, tb = transB == kTrans;
    memory aMem({{m, k}, memory::data_type::bf16, stridesOf(ta, lda)},
                gemms.engine, const_cast<uint16_t *>(a));
    memory bMem({{k, n}, memory::data_type::bf16, stridesOf(tb, ldb)},
                gemms.engine, const_cast<uint16_t *>(b));
    memory cMem({{m, n}, memory::data_type::f32, {ldc, 1}}, gemms.engine, c);
    gemms.get(ta, tb, accumulate)
        .execute(gemms.stream, {{DNNL_ARG_SRC, aMem},
                                {DNNL_ARG_WEIGHTS, bMem},
                                {DNNL_ARG_DST, cMem}});
    gemms.stream.wait();
  } catch (const dnnl::error &error) {
    fail(error.what(), m, n, k);
  }
}
