//===- Pipelines.h - The pass pipelines momac runs --------------*- C++ -*-===//

#ifndef MOMAC_COMPILER_PIPELINES_PIPELINES_H
#define MOMAC_COMPILER_PIPELINES_PIPELINES_H

#include "mlir/Pass/PassManager.h"

namespace momac {

/// Model-level optimizations on the moma dialect, before any lowering.
void buildMomaOptimizationPipeline(mlir::OpPassManager &pm);

} // namespace momac

#endif // MOMAC_COMPILER_PIPELINES_PIPELINES_H
