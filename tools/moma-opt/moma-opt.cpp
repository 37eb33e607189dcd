//===- moma-opt.cpp - Run moma passes on MLIR files -----------------------===//
//
// mlir-opt with the moma dialect and passes registered; lit tests drive each
// pass through it. Every upstream dialect and pass is registered too, so
// that any prefix of the CPU pipeline (momac::cpuLoweringPipeline) can be
// replayed pass by pass.
//
//===----------------------------------------------------------------------===//

#include "compiler/Autodiff/Passes.h"
#include "compiler/Codegen/Passes.h"
#include "compiler/Conversion/Passes.h"
#include "compiler/Target/CPU/Passes.h"
#include "dialects/moma/IR/MomaDialect.h"
#include "dialects/moma/Transforms/Passes.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  registry.insert<mlir::moma::MomaDialect>();
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  mlir::registerAllPasses();
  mlir::moma::registerMomaPasses();
  momac::registerMomacConversionPasses();
  momac::registerMomacCodegenPasses();
  momac::registerMomacCpuTargetPasses();
  momac::registerMomacAutodiffPasses();
  momac::registerUpstreamVJPModels(registry);
  return mlir::asMainReturnCode(mlir::MlirOptMain(
      argc, argv, "moma-opt: runs moma dialect passes on MLIR files\n",
      registry));
}
