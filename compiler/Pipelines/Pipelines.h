//===- Pipelines.h - The pass pipelines every target shares -----*- C++ -*-===//
//
// momac's path from a model to machine code, as IREE splits it (Codegen/
// Common, then LLVMCPU or LLVMGPU):
//
//   moma (forward) --model passes, autodiff, optimizer step--> moma train step
//   --addSharedLoweringPasses--> bufferized linalg/scf kernels + library calls
//   --target passes--> CPU: compiler/Target/CPU (BLAS, OpenMP, LLVM, object)
//                      CUDA: compiler/Target/CUDA (next)
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

/// moma -> linalg/scf/tensor kernels (MomaToLinalg: contractions stay
/// recognizable for the targets' GEMM libraries, top-k is a library call)
/// -> clean-up -> bufferization (results written into the callers' buffers)
/// -> memref. The entry points keep identity-layout memref signatures.
void addSharedLoweringPasses(mlir::OpPassManager &pm);

/// The end of every target's pipeline: host code (memref, scf, affine,
/// arith, math on the host, after the target's own passes) to the LLVM
/// dialect, functions with bare-pointer signatures (the artifact's entry
/// ABI, compiler/Target/Common/EntryPoints.h). memref ops are lowered before
/// scf.for becomes CFG (an scf.for in an OpenMP region sits in a
/// memref.alloca_scope that must keep a single block), and functions before
/// the target's runtime dialect (OpenMP, GPU launches), whose conversion
/// would otherwise lower them with full memref descriptors. The target
/// lowers that dialect and reconciles the casts after this.
void addHostLoweringToLLVMPasses(mlir::OpPassManager &pm);

} // namespace momac

#endif // MOMAC_COMPILER_PIPELINES_PIPELINES_H
