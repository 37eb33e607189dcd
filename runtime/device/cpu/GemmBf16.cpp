//===- GemmBf16.cpp - bf16 GEMM with f32 accumulation ---------------------===//
//
// Two ways to run it, chosen once per process (bf16GemmPath):
//
// - oneDNN's bf16 matmul, one primitive per (transposes, beta) with every
//   size and leading dimension given at run time: the token counts of expert
//   choice and MoD change from batch to batch, and a primitive per shape
//   would cost a JIT compile per new shape. It needs AVX-512 (AVX512_BF16 to
//   be fast); oneDNN refuses it on other CPUs;
// - the operands widened to f32 and the f32 GEMM (momart_sgemm: OpenBLAS,
//   or momac's kernels for few rows and small products). A bf16 value is an f32
//   value, and the product of two has at most 16 significant bits, so it is
//   exact in f32: the result is MODEL_SPEC's bf16 GEMM (bf16 operands, f32
//   accumulation) as well, only summed in another order.
//
// oneDNN runs where it can and is faster: at the first call both time the
// same GEMM (a step's expert shape) and the faster stays. MOMA_BF16_GEMM=
// onednn or =widened forces a path (the unit tests check both). The widened
// path pays for its copies (a tiny bf16 step ran at 0.87x the fp32 one on a
// Zen 3): where the f32 GEMM is the faster, momac's CPU target by default
// keeps the rounded operands in f32 and calls sgemm itself (momac
// --cpu-bf16-gemm), and this GEMM is not called at all.
//
//===----------------------------------------------------------------------===//

#include "runtime/device/cpu/GemmBf16.h"
#include "runtime/device/cpu/GemmF32.h"

#include <cblas.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace {

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

float widen(uint16_t bits) {
  uint32_t word = uint32_t(bits) << 16;
  float value;
  std::memcpy(&value, &word, 4);
  return value;
}

/// A row-major `rows` x `cols` bf16 matrix (leading dimension `ld`) as a
/// packed f32 one in `out`.
void widenMatrix(const uint16_t *in, int32_t rows, int32_t cols, int32_t ld,
                 std::vector<float> &out) {
  out.resize(size_t(rows) * cols);
  for (int32_t r = 0; r < rows; ++r)
    for (int32_t c = 0; c < cols; ++c)
      out[size_t(r) * cols + c] = widen(in[size_t(r) * ld + c]);
}

void gemmWidened(bool ta, bool tb, int32_t m, int32_t n, int32_t k,
                 const uint16_t *a, int32_t lda, const uint16_t *b,
                 int32_t ldb, float beta, float *c, int32_t ldc) {
  thread_local std::vector<float> wideA, wideB;
  widenMatrix(a, ta ? k : m, ta ? m : k, lda, wideA);
  widenMatrix(b, tb ? n : k, tb ? k : n, ldb, wideB);
  // The f32 GEMM that compiled code calls (its small and few-row kernels
  // included), so that a model's f32 GEMMs on bf16-rounded operands compute
  // what this computes, bit for bit.
  momart_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
               tb ? CblasTrans : CblasNoTrans, m, n, k, 1.0f, wideA.data(),
               ta ? m : k, wideB.data(), tb ? k : n, beta, c, ldc);
}

void gemmOneDnn(bool ta, bool tb, int32_t m, int32_t n, int32_t k,
                const uint16_t *a, int32_t lda, const uint16_t *b,
                int32_t ldb, bool accumulate, float *c, int32_t ldc) {
  thread_local ThreadGemms gemms;
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
}

enum class Path { OneDnn, Widened };

struct Choice {
  Path path = Path::Widened;
  std::string description;
};

/// Seconds of the fastest of a few runs of `gemm`.
template <typename Gemm> double fastest(Gemm gemm) {
  double best = 1e9;
  gemm(); // warm-up (and oneDNN's JIT)
  for (int i = 0; i < 3; ++i) {
    auto start = std::chrono::steady_clock::now();
    gemm();
    best = std::min(best, std::chrono::duration<double>(
                              std::chrono::steady_clock::now() - start)
                              .count());
  }
  return best;
}

Choice choose() {
  Choice choice;
  const char *forced = std::getenv("MOMA_BF16_GEMM");
  std::string force = forced ? forced : "";
  if (force == "widened") {
    choice.description = "f32 sgemm on widened operands (MOMA_BF16_GEMM)";
    return choice;
  }
  // A step's expert GEMM: 256 tokens through a 512 -> 1408 projection.
  const int32_t m = 256, n = 1408, k = 512;
  std::vector<uint16_t> a(size_t(m) * k), b(size_t(k) * n);
  for (size_t i = 0; i < a.size(); ++i)
    a[i] = uint16_t(0x3f80 + (i * 7919 % 127)); // values in [1, 2)
  for (size_t i = 0; i < b.size(); ++i)
    b[i] = uint16_t(0xbf80 + (i * 104729 % 127));
  std::vector<float> c(size_t(m) * n);
  double oneDnnSeconds = 0;
  try {
    oneDnnSeconds = fastest([&] {
      gemmOneDnn(false, false, m, n, k, a.data(), k, b.data(), n, false,
                 c.data(), n);
    });
  } catch (const dnnl::error &error) {
    if (force == "onednn")
      fail((std::string("MOMA_BF16_GEMM=onednn: ") + error.what()).c_str(), m,
           n, k);
    choice.description = std::string("f32 sgemm on widened operands (oneDNN "
                                      "has no bf16 matmul for this CPU: ") +
                         error.what() + ")";
    return choice;
  }
  double widenedSeconds = fastest([&] {
    gemmWidened(false, false, m, n, k, a.data(), k, b.data(), n, 0.0f,
                c.data(), n);
  });
  char measured[160];
  std::snprintf(measured, sizeof(measured),
                "%.0f GFLOP/s against %.0f for f32 sgemm on widened operands",
                2e-9 * m * n * k / oneDnnSeconds,
                2e-9 * m * n * k / widenedSeconds);
  if (force == "onednn" || oneDnnSeconds <= widenedSeconds) {
    choice.path = Path::OneDnn;
    choice.description = std::string("oneDNN bf16 matmul (") + measured +
                         (force == "onednn" ? "; MOMA_BF16_GEMM)" : ")");
  } else {
    char text[256];
    std::snprintf(text, sizeof(text),
                  "f32 sgemm on widened operands (%.0f GFLOP/s; oneDNN's bf16 "
                  "matmul: %.0f)",
                  2e-9 * m * n * k / widenedSeconds,
                  2e-9 * m * n * k / oneDnnSeconds);
    choice.description = text;
  }
  return choice;
}

const Choice &bf16GemmPath() {
  static std::once_flag once;
  static Choice choice;
  std::call_once(once, [] { choice = choose(); });
  return choice;
}

} // namespace

extern "C" const char *momart_gemm_bf16_path(void) {
  return bf16GemmPath().description.c_str();
}

extern "C" void momart_gemm_bf16(int32_t order, int32_t transA,
                                 int32_t transB, int32_t m, int32_t n,
                                 int32_t k, float alpha, const uint16_t *a,
                                 int32_t lda, const uint16_t *b, int32_t ldb,
                                 float beta, float *c, int32_t ldc) {
  if (order != CblasRowMajor ||
      (transA != CblasNoTrans && transA != CblasTrans) ||
      (transB != CblasNoTrans && transB != CblasTrans))
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
  bool ta = transA == CblasTrans, tb = transB == CblasTrans;
  if (bf16GemmPath().path == Path::Widened) {
    gemmWidened(ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  try {
    gemmOneDnn(ta, tb, m, n, k, a, lda, b, ldb, accumulate, c, ldc);
  } catch (const dnnl::error &error) {
    fail(error.what(), m, n, k);
  }
}
