//===- Pipelines.cpp - The pass pipelines momac runs ----------------------===//

#include "compiler/Pipelines/Pipelines.h"

#include "dialects/moma/Transforms/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

void momac::buildMomaOptimizationPipeline(mlir::OpPassManager &pm) {
  mlir::OpPassManager &func = pm.nest<mlir::func::FuncOp>();
  func.addPass(mlir::moma::createMomaReuseModalityPartition());
}
