//===- Passes.h - momac autodiff passes -------------------------*- C++ -*-===//

#ifndef MOMAC_COMPILER_AUTODIFF_PASSES_H
#define MOMAC_COMPILER_AUTODIFF_PASSES_H

#include "dialects/moma/IR/MomaDialect.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Pass/Pass.h"

namespace momac {

#define GEN_PASS_DECL
#include "compiler/Autodiff/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "compiler/Autodiff/Passes.h.inc"

/// VJP rules for the upstream ops the forward pass uses (arith.addf,
/// tensor.collapse_shape, tensor.splat), as external interface models.
void registerUpstreamVJPModels(mlir::DialectRegistry &registry);

} // namespace momac

#endif // MOMAC_COMPILER_AUTODIFF_PASSES_H
