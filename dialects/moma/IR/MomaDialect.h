//===- MomaDialect.h - The moma dialect -------------------------*- C++ -*-===//

#ifndef MOMAC_DIALECTS_MOMA_IR_MOMADIALECT_H
#define MOMAC_DIALECTS_MOMA_IR_MOMADIALECT_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Dialect.h"

#include "dialects/moma/IR/MomaDialect.h.inc"

#endif // MOMAC_DIALECTS_MOMA_IR_MOMADIALECT_H
