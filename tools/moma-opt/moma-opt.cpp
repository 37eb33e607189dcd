//===- moma-opt.cpp - Run moma passes on MLIR files -----------------------===//
//
// mlir-opt with the moma dialect and passes registered; lit tests drive each
// pass through it. Every upstream dialect and pass is registered too, so
// that any prefix of a target's pipeline (momac::cpuLoweringPipeline,
// momac::addCudaCodegenPasses) can be replayed pass by pass.
//
//===----------------------------------------------------------------------===//

#include "compiler/Autodiff/Passes.h"
#include "compiler/Codegen/Passes.h"
#include "compiler/Conversion/Passes.h"
#include "compiler/Target/CPU/Passes.h"
#include "compiler/Target/CUDA/Passes.h"
#include "dialects/moma/IR/MomaDialect.h"
#include "dialects/moma/Transforms/Passes.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Target/LLVM/NVVM/Target.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  registry.insert<mlir::moma::MomaDialect>();
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  // gpu-module-to-binary translates gpu.modules to LLVM IR and serializes
  // them for their NVVM target (PTX, cubin with ptxas).
  mlir::registerAllToLLVMIRTranslations(registry);
  mlir::NVVM::registerNVVMTargetInterfaceExternalModels(registry);
  mlir::registerAllPasses();
  mlir::moma::registerMomaPasses();
  momac::registerMomacConversionPasses();
  momac::registerMomacCodegenPasses();
  momac::registerMomacCpuTargetPasses();
  momac::registerMomacCudaTargetPasses();
  momac::registerMomacAutodiffPasses();
  momac::registerUpstreamVJPModels(registry);
  return mlir::asMainReturnCode(mlir::MlirOptMain(
      argc, argv, "moma-opt: runs moma dialect passes on MLIR files\n",
      registry));
}
