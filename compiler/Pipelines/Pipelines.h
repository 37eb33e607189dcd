//===- Pipelines.h - The pass pipelines every target shares -----*- C++ -*-===//
//
// momac's path from a model to machine code, as IREE splits it (Codegen/
// Common, then LLVMCPU or LLVMGPU):
//
//   moma (forward) --addTrainingStepPasses--> moma train step
//   --addSharedLoweringPasses--> bufferized linalg/scf kernels + library calls
//   --target passes--> CPU: compiler/Target/CPU (BLAS, OpenMP, LLVM, object)
//                      CUDA: compiler/Target/CUDA (cuBLAS, GPU mapping,
//                            NVVM, PTX and cubin; or its emulation on the
//                            host)
//
// Everything up to the target split lives here and holds nothing
// target-specific (no BLAS, no threads, no OpenMP).
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_COMPILER_PIPELINES_PIPELINES_H
#define MOMAC_COMPILER_PIPELINES_PIPELINES_H

#include "mlir/Pass/PassManager.h"

namespace momac {

/// Model-level optimizations on the moma dialect, before any lowering.
void buildMomaOptimizationPipeline(mlir::OpPassManager &pm);

/// AdamW's hyperparameters and the gradient clipping norm (the model's
/// train.*), shared by every optimizer step of the training step.
struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-5;
  double weightDecay = 0.1;
  double gradClip = 1.0;
};

/// What the training step holds besides @forward, @grad and
/// @optimizer_step.
struct TrainingStepOptions {
  AdamWOptions adamW;
  /// Also the fully sharded step (momac --fsdp): @fsdp_grad,
  /// @fsdp_grad_norm and @fsdp_adamw_*.
  bool shardedStep = false;
  /// Also the auxiliary routers' steps (models with aux_routers): @grad_aux,
  /// the gradient of the routers' objective @forward_aux, and
  /// @optimizer_step_aux, AdamW on the auxiliary routers only.
  bool auxRouterSteps = false;
};

/// The training step from the forward functions the front end built: the
/// model-level passes, then @grad (reverse mode from @forward's loss),
/// @optimizer_step (clipping and AdamW) and what `options` adds.
void addTrainingStepPasses(mlir::OpPassManager &pm,
                           const TrainingStepOptions &options);

/// moma -> linalg/scf/tensor kernels (MomaToLinalg: contractions stay
/// recognizable for the targets' GEMM libraries, top-k is a library call)
/// -> clean-up -> each layer's phases outlined into a function per kind of
/// layer (-moma-outline-layers), so that what follows runs once per kind
/// -> fusion, tiling -> bufferization (results written into the callers'
/// buffers) -> memref. The entry points keep identity-layout memref
/// signatures.
struct SharedLoweringOptions {
  /// Outline each layer's phases into a function per kind of layer
  /// (-moma-outline-layers); off (momac --outline-layers=false), every
  /// layer's code is lowered and compiled again, as before that pass.
  bool outlineLayers = true;
  /// bf16 GEMM operands (train.precision "bf16") rounded to bf16 but kept
  /// in f32, the GEMMs in f32 (convert-moma-to-linalg{gemm-operands-in-f32}):
  /// for a target whose f32 GEMM is faster than its bf16 one.
  bool gemmOperandsInF32 = false;
};
void addSharedLoweringPasses(mlir::OpPassManager &pm,
                             const SharedLoweringOptions &options = {});

/// The end of every target's pipeline: host code (memref, scf, affine,
/// arith, math on the host, after the target's own passes) to the LLVM
/// dialect: the entry points with bare-pointer signatures (the artifact's
/// entry ABI, compiler/Target/Common/EntryPoints.h, `llvm.bareptr`), the
/// layer functions they call with memref descriptors (their token
/// dimensions are dynamic). memref ops are lowered before
/// scf.for becomes CFG (an scf.for in an OpenMP region sits in a
/// memref.alloca_scope that must keep a single block), and functions before
/// the target's runtime dialect (OpenMP, GPU launches), whose conversion
/// would otherwise lower them with full memref descriptors. The target
/// lowers that dialect and reconciles the casts after this.
void addHostLoweringToLLVMPasses(mlir::OpPassManager &pm);

} // namespace momac

#endif // MOMAC_COMPILER_PIPELINES_PIPELINES_H
