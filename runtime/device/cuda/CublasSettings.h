//===- CublasSettings.h - How the runtime configures cuBLAS -----*- C++ -*-===//
//
// The one place that says how the runtime's cuBLAS handle runs its GEMMs,
// shared with bench/cublas_gemm.cpp so that the cuBLAS-against-cuBLASLt
// table measures what the steps really run.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_DEVICE_CUDA_CUBLASSETTINGS_H
#define MOMAC_RUNTIME_DEVICE_CUDA_CUBLASSETTINGS_H

#include <cublas_v2.h>

#include <cstddef>
#include <cstdlib>
#include <string>

namespace momac::cuda {

/// The workspace cuBLAS gets (NVIDIA's recommendation for Hopper), from the
/// caching allocator instead of cuBLAS's own cudaMalloc.
inline constexpr size_t kCublasWorkspaceBytes = size_t(32) << 20;

/// The math mode: cuBLAS's default, under which CUBLAS_COMPUTE_32F keeps f32
/// products exact (no TF32: the reference comparison needs them) and bf16
/// operands use the tensor cores; TF32 only with MOMA_ALLOW_TF32=1. (The
/// pedantic mode, used before, can keep bf16 GEMMs off the tensor cores.)
inline cublasMath_t cublasMathMode() {
  const char *tf32 = std::getenv("MOMA_ALLOW_TF32");
  return tf32 && std::string(tf32) == "1" ? CUBLAS_TF32_TENSOR_OP_MATH
                                          : CUBLAS_DEFAULT_MATH;
}

} // namespace momac::cuda

#endif // MOMAC_RUNTIME_DEVICE_CUDA_CUBLASSETTINGS_H
