//===- moma-opt.cpp - Run moma passes on MLIR files -----------------------===//
//
// mlir-opt with the moma dialect and passes registered; lit tests drive each
// pass through it.
//
//===----------------------------------------------------------------------===//

#include "compiler/Autodiff/Passes.h"
#include "compiler/Conversion/Passes.h"
#include "dialects/moma/IR/MomaDialect.h"
#include "dialects/moma/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  registry.insert<mlir::moma::MomaDialect, mlir::func::FuncDialect,
                  mlir::arith::ArithDialect, mlir::tensor::TensorDialect,
                  mlir::linalg::LinalgDialect, mlir::math::MathDialect,
                  mlir::scf::SCFDialect, mlir::memref::MemRefDialect,
                  mlir::LLVM::LLVMDialect>();
  mlir::moma::registerMomaPasses();
  momac::registerMomacConversionPasses();
  momac::registerMomacAutodiffPasses();
  momac::registerUpstreamVJPModels(registry);
  // Upstream clean-ups that moma pipelines use (canonicalize, cse, ...).
  mlir::registerTransformsPasses();
  return mlir::asMainReturnCode(mlir::MlirOptMain(
      argc, argv, "moma-opt: runs moma dialect passes on MLIR files\n",
      registry));
}
