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

    Routing is computed exactly as MODEL_SPEC sections 4 and 5 say. Each
    score becomes a 64-bit key whose ascending order is descending score,
    ties to the lower token index, NaN last; the top k of an expert (or MoD
    router) are then the k smallest keys, which the runtime's selection
    routine `momart_select_smallest_i64` finds in O(n + k log k) per expert
    (a library call: each target's runtime implements it).
    Router noise (Gumbel, training only) comes in as an operand of
    `moma.router` and is added to the logits.

    Attention and its gradient are online-softmax kernels over
    `attention-block-rows` query (and key) rows of one head of one sequence
    (AttentionToLinalg.cpp): no sequence's score matrix is ever written,
    only tiles of it, and tiles above the causal diagonal are skipped.

    With `moma.gemm_operand_type` bf16 (train.precision "bf16"), every
    GEMM operand except the routers' is rounded to bf16 and the GEMM
    accumulates in f32. `gemm-operands-in-f32` keeps the rounded operands
    in f32 tensors (`arith.truncf` then `arith.extf`) and the GEMMs in f32:
    the same products, for a target whose f32 GEMM is the faster one.
  }];
  let options = [
    Option<"attentionBlockRows", "attention-block-rows", "int64_t",
           /*default=*/"64",
           "Query and key rows per attention tile">,
    Option<"gemmOperandsInF32", "gemm-operands-in-f32", "bool",
           /*default=*/"false",
           "Round GEMM operands to the module's moma.gemm_operand_type but "
           "keep them in f32 tensors, so that the GEMMs run in f32 (marks "
           "the module moma.gemm_operands_in_f32)">
  ];
  let dependentDialects = [
    "::mlir::affine::AffineDialect",
    "::mlir::arith::ArithDialect",
    "::mlir::bufferization::BufferizationDialect",
    "::mlir::func::FuncDialect",
    "::mlir::LLVM::LLVMDialect",
    "::mlir::linalg::LinalgDialect",
    "::mlir::memref::MemRefDialect",
    "::mlir::math::MathDialect",
    "::mlir::scf::SCFDialect",
    "::mlir::tensor::TensorDialect"
  ];
}

#endif // MOMAC_CONVERSION_PASSES_TD
