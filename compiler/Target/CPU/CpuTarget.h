//===- CpuTarget.h - Compile moma modules into CPU artifacts ----*- C++ -*-===//
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

/// Lowers `module` (moma dialect, entry points named by `moma.param` and
/// `moma.result` attributes) to native code and writes the artifact.
/// Diagnostics go to the module's context.
mlir::LogicalResult buildCpuArtifact(mlir::ModuleOp module,
                                     const ModelConfig &config,
                                     llvm::StringRef descriptionText,
                                     const ArtifactOptions &options);

/// The pass pipeline from the moma dialect to the LLVM dialect, as the
/// textual pass list of a builtin.module pass manager (for debugging:
/// moma-opt --pass-pipeline="builtin.module(<this>)").
std::string cpuLoweringPipeline();

} // namespace momac

#endif // MOMAC_COMPILER_TARGET_CPU_CPUTARGET_H
