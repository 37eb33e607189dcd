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
  }];
  let dependentDialects = [
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

def ConvertLinalgToBlas : Pass<"convert-linalg-to-blas", "::mlir::ModuleOp"> {
  let summary = "Turn buffer contractions into cblas_sgemm calls";
  let description = [{
    After bufferization, a `linalg.generic` that computes `C += A B` in f32
    (two inputs, one output, a multiply feeding an add, one reduction loop)
    becomes calls to `cblas_sgemm` (row major, alpha = beta = 1) in one
    `scf.parallel` loop over its batch loops (stacked experts, attention
    heads) and, when the batch is smaller than `omp_get_max_threads()`, over
    blocks of C's longer side. BLAS thus runs single-threaded inside the
    same OpenMP pool as the generated kernels (the runtime sets
    OPENBLAS_NUM_THREADS=1) instead of in a second pool of its own. The
    loops present in A and C but not B are the rows M, in B and C but not A
    the columns N, in A and B the reduction K. Each operand's two non-batch
    dimensions must have unit stride on one of them (which picks the
    transpose flag); C must be row major. Other contractions stay loops.
  }];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::func::FuncDialect",
    "::mlir::LLVM::LLVMDialect",
    "::mlir::memref::MemRefDialect",
    "::mlir::scf::SCFDialect"
  ];
}

#endif // MOMAC_CONVERSION_PASSES_TD
