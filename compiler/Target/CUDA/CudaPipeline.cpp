//===- CudaPipeline.cpp - The CUDA target's passes after the shared ones --===//

#include "compiler/Target/CUDA/Passes.h"

#include "compiler/Pipelines/Pipelines.h"

#include "mlir/Conversion/AffineToStandard/AffineToStandard.h"
#include "mlir/Conversion/ArithToLLVM/ArithToLLVM.h"
#include "mlir/Conversion/ControlFlowToLLVM/ControlFlowToLLVM.h"
#include "mlir/Conversion/FuncToLLVM/ConvertFuncToLLVMPass.h"
#include "mlir/Conversion/GPUCommon/GPUCommonPass.h"
#include "mlir/Conversion/GPUToNVVM/GPUToNVVMPass.h"
#include "mlir/Conversion/MathToLLVM/MathToLLVM.h"
#include "mlir/Conversion/MemRefToLLVM/MemRefToLLVM.h"
#include "mlir/Conversion/ReconcileUnrealizedCasts/ReconcileUnrealizedCasts.h"
#include "mlir/Conversion/SCFToControlFlow/SCFToControlFlow.h"
#include "mlir/Dialect/GPU/Transforms/Passes.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;

void momac::addCudaCodegenPasses(OpPassManager &pm,
                                 const CudaCodegenOptions &options) {
  // GEMMs outside tiles become cuBLAS calls; tiles become thread blocks;
  // what is left between them becomes device work; all of it is ordered
  // on the step's stream.
  pm.addPass(createConvertLinalgToCublas());
  pm.nest<func::FuncOp>().addPass(createMapTilesToGpu());
  pm.nest<func::FuncOp>().addPass(createMapHostCodeToGpu());
  pm.addPass(createCanonicalizerPass());
  pm.nest<func::FuncOp>().addPass(createOrderOnStepStream());

  // Kernels: outlined into one gpu.module, lowered to NVVM for the chip.
  pm.addPass(createGpuKernelOutliningPass());
  pm.addPass(createMergeKernelModules());
  GpuNVVMAttachTargetOptions target;
  target.chip = options.chip;
  target.features = options.features;
  target.optLevel = 3;
  pm.addPass(createGpuNVVMAttachTarget(target));
  OpPassManager &kernels = pm.nest<gpu::GPUModuleOp>();
  kernels.addPass(createLowerAffinePass());
  kernels.addPass(memref::createExpandStridedMetadataPass());
  kernels.addPass(createLowerAffinePass());
  kernels.addPass(createSCFToControlFlowPass());
  kernels.addPass(createLowerSubgroupReduceToShuffles());
  ConvertGpuOpsToNVVMOpsOptions nvvm;
  nvvm.indexBitwidth = 64;
  kernels.addPass(createConvertGpuOpsToNVVMOps(nvvm));
  kernels.addPass(createCanonicalizerPass());
  kernels.addPass(createCSEPass());
  kernels.addPass(createReconcileUnrealizedCastsPass());

  // Host code: launches become mgpu* runtime calls.
  addHostLoweringToLLVMPasses(pm);
  GpuToLLVMConversionPassOptions gpuToLLVM;
  gpuToLLVM.hostBarePtrCallConv = true;
  pm.addPass(createGpuToLLVMConversionPass(gpuToLLVM));
  pm.addPass(createReconcileUnrealizedCastsPass());
}

void momac::addCudaEmulationPasses(OpPassManager &pm) {
  // The CUDA mapping, as for the GPU...
  pm.addPass(createConvertLinalgToCublas());
  pm.nest<func::FuncOp>().addPass(createMapTilesToGpu());
  pm.nest<func::FuncOp>().addPass(createMapHostCodeToGpu());
  pm.addPass(createCanonicalizerPass());
  // ... run block by block, thread by thread, on the host.
  pm.nest<func::FuncOp>().addPass(createEmulateGpuOnHost());
  pm.addPass(createCanonicalizerPass());
  addHostLoweringToLLVMPasses(pm);
  pm.addPass(createReconcileUnrealizedCastsPass());
}
