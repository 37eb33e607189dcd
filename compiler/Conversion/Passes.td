//===- Passes.td - momac conversion passes -----------------*- tablegen -*-===//

#ifndef MOMAC_CONVERSION_PASSES_TD
#define MOMAC_CONVERSION_PASSES_TD

include "mlir/Pass/PassBase.td"

def ConvertMomaToLinalg : Pass<"convert-moma-to-linalg", "::mlir::ModuleOp"> {
  let summary = "Lower moma ops to linalg, tensor, scf, arith and math on tensors";
  let description = [{
    Every moma op becomes structured code on tensors that both targets share:
    `linalg.generic` for element-wise work, reductions and contractions (the
    GEMMs, which later become BLAS or cuBLAS calls), and `scf.for` loops with
    `tensor.extract`/`tensor.insert` for the data-dependent parts of routing
    (compacting token lists, scatter-adding expert outputs).

    Routing is computed exactly as MODEL_SPEC sections 4 and 5 say: a token's
    rank among the scores of its expert (or MoD router) counts the tokens
    with a higher score plus the equal ones at a lower index, so ties go to
    the lower index without a sort, and the rank is the token's slot.
    Gumbel noise is not applied: this lowering computes evaluation routing.
  }];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::linalg::LinalgDialect",
    "::mlir::math::MathDialect",
    "::mlir::scf::SCFDialect",
    "::mlir::tensor::TensorDialect"
  ];
}

#endif // MOMAC_CONVERSION_PASSES_TD
