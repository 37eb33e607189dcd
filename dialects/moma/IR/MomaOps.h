//===- MomaOps.h - moma dialect operations ----------------------*- C++ -*-===//

#ifndef MOMAC_DIALECTS_MOMA_IR_MOMAOPS_H
#define MOMAC_DIALECTS_MOMA_IR_MOMAOPS_H

#include "dialects/moma/IR/MomaDialect.h"

#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "dialects/moma/IR/MomaInterfaces.h.inc"

#define GET_OP_CLASSES
#include "dialects/moma/IR/MomaOps.h.inc"

#endif // MOMAC_DIALECTS_MOMA_IR_MOMAOPS_H
