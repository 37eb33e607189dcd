//===- MomaDialect.h - The moma dialect -------------------------*- C++ -*-===//

#ifndef MOMAC_DIALECTS_MOMA_IR_MOMADIALECT_H
#define MOMAC_DIALECTS_MOMA_IR_MOMADIALECT_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Dialect.h"

#include "dialects/moma/IR/MomaDialect.h.inc"

namespace mlir::moma {
/// Marks a float argument of @forward that is data, not a parameter (the
/// router noise): autodiff gives it no gradient and the optimizer skips it.
constexpr llvm::StringLiteral kNoGradAttrName = "moma.no_grad";
} // namespace mlir::moma

#endif // MOMAC_DIALECTS_MOMA_IR_MOMADIALECT_H
