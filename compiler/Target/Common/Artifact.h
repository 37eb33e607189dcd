//===- Artifact.h - What every target's artifact is made of -----*- C++ -*-===//
//
// An artifact is a directory:
//   model.so        the compiled entry points (void momac_<name>(void **)),
//                   host code; a GPU target's kernels are embedded in it
//   manifest.json   target, parameters, entry points and their buffers
//   model.json      the model description it was compiled from
// momarun dlopens model.so; nothing is compiled at run time. The steps here
// are the same for every target: the entry-point ABI before lowering, LLVM
// optimization and code generation of the host code, the link, the
// manifest. Each target (compiler/Target/CPU, compiler/Target/CUDA) adds
// its passes between them and its libraries to the link.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_COMPILER_TARGET_COMMON_ARTIFACT_H
#define MOMAC_COMPILER_TARGET_COMMON_ARTIFACT_H

#include "lib/artifact/Manifest.h"
#include "lib/config/ModelConfig.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/Timing.h"

#include <functional>

namespace momac {

struct ArtifactOptions {
  std::string outputDir;
  /// Also write the optimized LLVM IR of the host code, for inspection:
  /// model.N.ll, one per code-generation partition.
  bool keepLLVMIR = false;
  /// Where the phases (MLIR lowering, LLVM optimization, code generation,
  /// link) record their time; a disabled scope records nothing.
  mlir::TimingScope *timing = nullptr;
};

/// What a target adds to the artifact steps every target shares.
struct TargetBackend {
  /// The manifest's "target" ("cpu", "cuda") and the phase names' prefix.
  std::string name;
  /// The target's passes after the shared pipeline, down to the LLVM
  /// dialect.
  std::function<void(mlir::OpPassManager &)> addCodegenPasses;
  /// Registers what the target needs in the context (translations of its
  /// dialects to LLVM IR, GPU targets), before anything runs.
  std::function<void(mlir::DialectRegistry &)> registerDialects;
  /// After the passes and the entry points, before the host code is
  /// compiled (CUDA: the kernels' serialization), timed as `finishPhase`;
  /// may be empty.
  std::function<mlir::LogicalResult(mlir::ModuleOp)> finishModule;
  std::string finishPhase;
  /// LLVM's optimization level for the host code.
  unsigned hostOptLevel = 3;
  /// What model.so links besides its objects (runtime archive, libraries).
  std::vector<std::string> linkArguments;
};

/// Compiles `module` (moma dialect, entry points named by `moma.param` and
/// `moma.result` attributes) for `target` and writes the artifact into
/// options.outputDir: the shared pipeline, the target's passes, the packed
/// entry points, the target's finishing step, host objects, the link, the
/// manifest. Diagnostics go to the module's context.
mlir::LogicalResult buildArtifact(mlir::ModuleOp module,
                                  const ModelConfig &config,
                                  llvm::StringRef descriptionText,
                                  const ArtifactOptions &options,
                                  const TargetBackend &target);

/// Registers every dialect, extension and interface the lowerings name.
void loadLoweringDialects(mlir::MLIRContext *context);

/// The entry points of `module` (its public functions) described for the
/// manifest, their results turned into out-parameters (the artifact's ABI).
mlir::FailureOr<std::vector<EntryPointSpec>>
prepareEntryPoints(mlir::ModuleOp module);

/// The lowering up to the target split: entry-point results become
/// out-parameters, then the shared pipeline (compiler/Pipelines) fuses,
/// tiles and bufferizes. What --stats counts.
mlir::LogicalResult lowerThroughSharedPipeline(mlir::ModuleOp module);

/// LLVM dialect (host code) -> object files for this machine, optimized at
/// `optLevel` (0-3), written as `prefix`.N.o (and, when `keepLLVMIR`,
/// `prefix`.N.ll); returns their paths. The module is split into
/// `partitions` parts (0: one per hardware thread) compiled in parallel.
/// The target registers the LLVM IR translations its dialects need
/// (OpenMP, GPU) before calling this.
mlir::FailureOr<llvm::SmallVector<std::string>>
emitHostObjects(mlir::ModuleOp module, llvm::StringRef prefix,
                bool keepLLVMIR, unsigned partitions, unsigned optLevel,
                mlir::TimingScope &timing);

/// Links `objects` into the shared library `libraryPath` with the system
/// C++ driver, followed by `linkArguments` (the target's runtime archive
/// and libraries).
mlir::LogicalResult linkSharedLibrary(mlir::Location loc,
                                      llvm::ArrayRef<std::string> objects,
                                      llvm::StringRef libraryPath,
                                      llvm::ArrayRef<std::string> linkArguments);

/// Writes manifest.json (with the library's fingerprint) and model.json.
mlir::LogicalResult writeManifestAndDescription(
    mlir::Location loc, const ModelConfig &config, llvm::StringRef target,
    llvm::ArrayRef<EntryPointSpec> entries, llvm::StringRef outputDir,
    llvm::StringRef descriptionText);

} // namespace momac

#endif // MOMAC_COMPILER_TARGET_COMMON_ARTIFACT_H
