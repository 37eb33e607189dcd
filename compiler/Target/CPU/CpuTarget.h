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

/// What the CPU target adds to the artifact steps (buildArtifact): its
/// passes, OpenMP's translation to LLVM IR, optimized host code, and the
/// CPU runtime and libraries in the link (cpuLinkArguments).
TargetBackend cpuTargetBackend();

/// The pass pipeline from the moma dialect to the LLVM dialect, as the
/// textual pass list of a builtin.module pass manager (for debugging:
/// moma-opt --pass-pipeline="builtin.module(<this>)").
std::string cpuLoweringPipeline();

} // namespace momac

#endif // MOMAC_COMPILER_TARGET_CPU_CPUTARGET_H
