//===- GemmBf16.h - bf16 GEMM with f32 accumulation for compiled code -*- C++ -*-===//
//
// The GEMM that compiled CPU artifacts call for train.precision "bf16"
// (MODEL_SPEC section 7: GEMM operands in bf16, accumulation in f32). The
// compiler emits these calls where it would emit cblas_sgemm, with the same
// arguments (compiler/Target/CPU/LinalgToBlas.cpp), so the call sites, the
// batching over experts and heads and the split over OpenMP threads are the
// same for both precisions.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_DEVICE_CPU_GEMMBF16_H
#define MOMAC_RUNTIME_DEVICE_CPU_GEMMBF16_H

#include <cstdint>

extern "C" {

/// C = alpha op(A) op(B) + beta C with A and B in bf16 (raw 16-bit words),
/// C in f32, accumulated in f32; the arguments are cblas_sgemm's (order must
/// be CblasRowMajor = 101; trans CblasNoTrans = 111 or CblasTrans = 112),
/// alpha must be 1 and beta 0 or 1. Runs oneDNN's bf16 matmul where the CPU
/// has one and it is faster, otherwise the f32 GEMM (momart_sgemm) on the
/// operands widened to f32 (GemmBf16.cpp: the same math). Called inside an
/// OpenMP parallel region it runs on the calling thread only. A misuse or a
/// oneDNN failure aborts with a message naming the shape.
void momart_gemm_bf16(int32_t order, int32_t transA, int32_t transB,
                      int32_t m, int32_t n, int32_t k, float alpha,
                      const uint16_t *a, int32_t lda, const uint16_t *b,
                      int32_t ldb, float beta, float *c, int32_t ldc);

/// Which of the two this process runs, and why, in words (decided at the
/// first call of either function, by timing both on a step's shape).
const char *momart_gemm_bf16_path(void);
}

#endif // MOMAC_RUNTIME_DEVICE_CPU_GEMMBF16_H
