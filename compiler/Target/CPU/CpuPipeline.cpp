//===- CpuPipeline.cpp - The CPU target's passes after the shared ones ----===//

#include "compiler/Target/CPU/Passes.h"

#include "compiler/Pipelines/Pipelines.h"

#include "mlir/Conversion/ArithToLLVM/ArithToLLVM.h"
#include "mlir/Conversion/ControlFlowToLLVM/ControlFlowToLLVM.h"
#include "mlir/Conversion/FuncToLLVM/ConvertFuncToLLVMPass.h"
#include "mlir/Conversion/MathToLLVM/MathToLLVM.h"
#include "mlir/Conversion/MemRefToLLVM/MemRefToLLVM.h"
#include "mlir/Conversion/OpenMPToLLVM/ConvertOpenMPToLLVM.h"
#include "mlir/Conversion/ReconcileUnrealizedCasts/ReconcileUnrealizedCasts.h"
#include "mlir/Conversion/SCFToControlFlow/SCFToControlFlow.h"
#include "mlir/Conversion/SCFToOpenMP/SCFToOpenMP.h"
#include "mlir/Conversion/AffineToStandard/AffineToStandard.h"
#include "mlir/Dialect/Arith/Transforms/Passes.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/Passes.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Dialect/SCF/Transforms/Passes.h"

using namespace mlir;

void momac::addCpuCodegenPasses(OpPassManager &pm) {
  // GEMMs become BLAS calls split over the OpenMP threads; the shared
  // pipeline's tile loops run on OpenMP, their kernels inside as
  // sequential loops.
  pm.addPass(createConvertLinalgToBlas());
  pm.nest<func::FuncOp>().addPass(createLowerLinalgToCpuLoops());
  pm.nest<func::FuncOp>().addPass(createApproximateTranscendentals());
  pm.nest<func::FuncOp>().addPass(createExpandArithForLLVM());
  pm.nest<func::FuncOp>().addPass(createForallToParallelLoopPass());
  pm.addPass(createConvertSCFToOpenMPPass());
  addHostLoweringToLLVMPasses(pm);
  pm.addPass(createConvertOpenMPToLLVMPass());
  pm.addPass(createReconcileUnrealizedCastsPass());
  // One function per parallel loop: keeps the OpenMP translation linear.
  pm.addPass(createOutlineParallelRegions());
}
