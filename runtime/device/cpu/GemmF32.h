//===- GemmF32.h - The f32 GEMM that compiled CPU code calls ----*- C++ -*-===//
//
// Compiled CPU artifacts call momart_sgemm where a GEMM's operands are f32
// (compiler/Target/CPU/LinalgToBlas.cpp); it takes cblas_sgemm's arguments.
// Most calls go to OpenBLAS. Two kinds of call go to kernels of this file,
// where OpenBLAS's fixed costs per call (packing both operands, zeroing C
// for beta = 0) exceed the product:
// - a GEMM of a few rows against a weight matrix (a decoding step: one token
//   per prompt, fewer per expert), which streams the weights once;
// - a small GEMM (at most 128 x 128, depth at most 512: attention's tiles of
//   64 query and key rows, thousands per step), which reads A in place, B in
//   place unless transposed, and keeps a 6 x 16 tile of C in registers.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_DEVICE_CPU_GEMMF32_H
#define MOMAC_RUNTIME_DEVICE_CPU_GEMMF32_H

#include <cstdint>

extern "C" {

/// cblas_sgemm: C = alpha op(A) op(B) + beta C, row-major (order 101).
/// On a CPU with AVX2 and FMA, row major, CblasNoTrans or CblasTrans, and
/// alpha != 0: with at most kFewRows rows, A not transposed and B transposed
/// (x W^T with W [n, k], nn.Linear's layout), the few-row kernel; else,
/// within the small-GEMM kernel's bounds (below), that kernel. Both sum
/// each dot product in another order than OpenBLAS (f32 rounding
/// differences, no other), the same order for a given shape whatever the
/// leading dimensions. Everything else goes to OpenBLAS.
void momart_sgemm(int32_t order, int32_t transA, int32_t transB, int32_t m,
                  int32_t n, int32_t k, float alpha, const float *a,
                  int32_t lda, const float *b, int32_t ldb, float beta,
                  float *c, int32_t ldc);
}

namespace momac::cpu {
/// The most rows momart_sgemm gives the few-row kernel.
constexpr int32_t kFewRows = 8;
/// The few-row kernel itself (for the unit tests): C[m, n] = alpha A[m, k]
/// B[n, k]^T + beta C. False, with nothing computed, where m is not in
/// [1, kFewRows] or the CPU lacks AVX2 and FMA.
bool fewRowsTimesTransposed(int32_t m, int32_t n, int32_t k, float alpha,
                            const float *a, int32_t lda, const float *b,
                            int32_t ldb, float beta, float *c, int32_t ldc);

/// The small-GEMM kernel's bounds: at most kSmallGemmMaxRows rows and
/// columns of C, a depth (k) of at most kSmallGemmMaxDepth, and at most
/// kSmallGemmPacked floats of op(B) to copy onto the stack (all of it,
/// columns padded to 16, where B is transposed; else a last partial block).
constexpr int32_t kSmallGemmMaxRows = 128;
constexpr int32_t kSmallGemmMaxDepth = 512;
constexpr int64_t kSmallGemmPacked = 8192;
/// The small-GEMM kernel itself (for the unit tests): C = alpha op(A) op(B)
/// + beta C, row major. False, with nothing computed, outside the bounds or
/// on a CPU without AVX2 and FMA.
bool smallGemm(bool transA, bool transB, int32_t m, int32_t n, int32_t k,
               float alpha, const float *a, int32_t lda, const float *b,
               int32_t ldb, float beta, float *c, int32_t ldc);
} // namespace momac::cpu

#endif // MOMAC_RUNTIME_DEVICE_CPU_GEMMF32_H
