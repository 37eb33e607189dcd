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

#include "compiler/Pipelines/Pipelines.h"
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
  /// Verify the IR after every lowering pass (MLIR's default, momac
  /// --verify-each), not only once after the last: a quarter of the
  /// lowering time, worth it when a pass is suspected of breaking the IR.
  bool verifyEachPass = false;
  /// Compile each kind of layer once (-moma-outline-layers, the default).
  bool outlineLayers = true;
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
  /// compiled (CUDA: the kernels' serialization, which also writes files
  /// into the artifact directory `outputDir`), timed as `finishPhase`; may
  /// be empty.
  std::function<mlir::LogicalResult(mlir::ModuleOp, llvm::StringRef outputDir)>
      finishModule;
  std::string finishPhase;
  /// LLVM's optimization level for the host code other than the entry
  /// points' own: the CPU's kernels, the outlined host loops.
  unsigned hostOptLevel = 3;
  /// LLVM's optimization level for the entry points' own code: the
  /// straight-line host sequence of a step, which above O0 costs more to
  /// compile than everything else (see emitHostObjects) and whose run time
  /// is negligible.
  unsigned entryPointOptLevel = 0;
  /// What model.so links besides its objects (runtime archive, libraries).
  std::vector<std::string> linkArguments;
  /// Whether the front end pads the modality groups of Mixture-of-Depths
  /// layers to the layer's token count (moma.padded_modality_partition),
  /// so that no shape of the step depends on a count a MoD router decides
  /// and the counts can stay where the step runs. A target whose host would
  /// otherwise read each such count back from its device asks for it.
  bool padsModGroups = false;
  /// Whether bf16 models keep their rounded GEMM operands in f32 and run
  /// f32 GEMMs (SharedLoweringOptions::gemmOperandsInF32), and then what
  /// the manifest says of their GEMMs ("bf16_gemm", momarun's first line).
  bool gemmOperandsInF32 = false;
  std::string bf16GemmDescription;
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

/// What the shared pipeline does for `target` with `options`.
SharedLoweringOptions sharedLoweringOptions(const ArtifactOptions &options,
                                            const TargetBackend &target);

/// The lowering up to the target split: entry-point results become
/// out-parameters, then the shared pipeline (compiler/Pipelines) fuses,
/// tiles and bufferizes. What --stats counts.
mlir::LogicalResult
lowerThroughSharedPipeline(mlir::ModuleOp module,
                           const SharedLoweringOptions &options);

} // namespace momac

#endif // MOMAC_COMPILER_TARGET_COMMON_ARTIFACT_H
