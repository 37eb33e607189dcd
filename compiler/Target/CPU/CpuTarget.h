//===- CpuTarget.h - Compile moma modules into CPU artifacts ----*- C++ -*-===//
//
// An artifact is a directory:
//   model.so        the compiled entry points (void momac_<name>(void **))
//   manifest.json   parameters, entry points and their buffers
//   model.json      the model description it was compiled from
// momarun dlopens model.so; nothing is compiled at run time.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_COMPILER_TARGET_CPU_CPUTARGET_H
#define MOMAC_COMPILER_TARGET_CPU_CPUTARGET_H

#include "lib/config/ModelConfig.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Support/Timing.h"

namespace momac {

struct CpuArtifactOptions {
  std::string outputDir;
  /// Also write the optimized LLVM IR, for inspection: model.N.ll, one per
  /// code-generation partition.
  bool keepLLVMIR = false;
  /// Where the phases (MLIR lowering, LLVM optimization, code generation,
  /// link) record their time; a disabled scope records nothing.
  mlir::TimingScope *timing = nullptr;
};

/// The CPU artifact's lowering up to the target split: entry-point results
/// become out-parameters (the artifact's ABI), then the shared pipeline
/// (compiler/Pipelines) fuses, tiles and bufferizes. What --stats counts.
mlir::LogicalResult lowerThroughSharedPipeline(mlir::ModuleOp module);

/// Lowers `module` (moma dialect, entry points named by `moma.param` and
/// `moma.result` attributes) to native code and writes the artifact.
/// Diagnostics go to the module's context.
mlir::LogicalResult buildCpuArtifact(mlir::ModuleOp module,
                                     const ModelConfig &config,
                                     llvm::StringRef descriptionText,
                                     const CpuArtifactOptions &options);

/// The pass pipeline from the moma dialect to the LLVM dialect, as the
/// textual pass list of a builtin.module pass manager (for debugging:
/// moma-opt --pass-pipeline="builtin.module(<this>)").
std::string cpuLoweringPipeline();

} // namespace momac

#endif // MOMAC_COMPILER_TARGET_CPU_CPUTARGET_H
