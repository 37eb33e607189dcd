//===- CpuTarget.h - The CPU target's backend -------------------*- C++ -*-===//
//
// The CPU target: the shared pipeline, the CPU's passes
// (compiler/Target/CPU/Passes.td: BLAS and oneDNN GEMMs, OpenMP, vector
// code for this host), then the artifact steps every target shares
// (compiler/Target/Common/Artifact.h).
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_COMPILER_TARGET_CPU_CPUTARGET_H
#define MOMAC_COMPILER_TARGET_CPU_CPUTARGET_H

#include "compiler/Target/Common/Artifact.h"

namespace momac {

/// How a CPU artifact runs the GEMMs of a bf16 model (momac --cpu-bf16-gemm).
/// Either way the products are those of bf16-rounded operands, exact in f32,
/// summed in f32 (MODEL_SPEC section 7).
enum class CpuBf16Gemm {
  /// f32 unless the compiling CPU has AMX-BF16, where a bf16 GEMM is the
  /// faster (the artifact is compiled for this CPU anyway).
  Auto,
  /// bf16 operands and the runtime's bf16 GEMM (GemmBf16.cpp: oneDNN's
  /// matmul, or sgemm on f32 copies of the operands where a start-up
  /// measurement finds that faster).
  Bf16,
  /// Operands rounded to bf16 but kept in f32 and OpenBLAS's sgemm: no
  /// narrow copy to widen again before each GEMM.
  F32,
};

/// What the CPU target adds to the artifact steps (buildArtifact): its
/// passes, OpenMP's translation to LLVM IR, optimized host code, and the
/// CPU runtime and libraries in the link (cpuLinkArguments).
TargetBackend cpuTargetBackend(CpuBf16Gemm bf16Gemm = CpuBf16Gemm::Auto);

/// The pass pipeline from the moma dialect to the LLVM dialect, as the
/// textual pass list of a builtin.module pass manager (for debugging:
/// moma-opt --pass-pipeline="builtin.module(<this>)").
std::string cpuLoweringPipeline();

} // namespace momac

#endif // MOMAC_COMPILER_TARGET_CPU_CPUTARGET_H
