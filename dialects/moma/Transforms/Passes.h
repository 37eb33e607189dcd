//===- Passes.h - moma dialect passes ---------------------------*- C++ -*-===//

#ifndef MOMAC_DIALECTS_MOMA_TRANSFORMS_PASSES_H
#define MOMAC_DIALECTS_MOMA_TRANSFORMS_PASSES_H

#include "dialects/moma/IR/MomaDialect.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Pass/Pass.h"

namespace mlir::moma {

#define GEN_PASS_DECL
#include "dialects/moma/Transforms/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "dialects/moma/Transforms/Passes.h.inc"

} // namespace mlir::moma

#endif // MOMAC_DIALECTS_MOMA_TRANSFORMS_PASSES_H
