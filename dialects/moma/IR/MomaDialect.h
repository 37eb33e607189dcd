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
/// On the module: the element type of GEMM operands (`bf16` for
/// train.precision "bf16", MODEL_SPEC section 7); absent means f32. The
/// lowering rounds the operands of every GEMM except the routers' to it and
/// accumulates in f32.
constexpr llvm::StringLiteral kGemmOperandTypeAttrName =
    "moma.gemm_operand_type";
} // namespace mlir::moma

#endif // MOMAC_DIALECTS_MOMA_IR_MOMADIALECT_H
