//===- Passes.td - Passes of the CPU target ----------------*- tablegen -*-===//
//
// What only the CPU target does after the shared pipeline: GEMMs as BLAS
// calls split over the OpenMP threads. The CUDA target has its own.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_TARGET_CPU_PASSES_TD
#define MOMAC_TARGET_CPU_PASSES_TD

include "mlir/Pass/PassBase.td"

def ConvertLinalgToBlas : Pass<"convert-linalg-to-blas", "::mlir::ModuleOp"> {
  let summary = "Turn buffer contractions into calls of the runtime's GEMMs";
  let description = [{
    After bufferization, a `linalg.generic` that computes `C += A B` in f32
    (two inputs, one output, a multiply feeding an add, one reduction loop)
    becomes calls to `momart_sgemm`, the CPU runtime's f32 GEMM with
    cblas_sgemm's arguments (OpenBLAS, or a kernel that streams the weights
    once for a GEMM of a few rows; runtime/device/cpu/GemmF32.h) (row
    major, alpha = 1; beta = 0 when a
    `linalg.fill` of zero into C comes right before it, which the call then
    replaces, otherwise beta = 1) in one
    `scf.parallel` loop over its batch loops (stacked experts, attention
    heads) and, when the batch is smaller than `omp_get_max_threads()`, over
    blocks of C's longer side. BLAS thus runs single-threaded inside the
    same OpenMP pool as the generated kernels (the runtime sets
    OPENBLAS_NUM_THREADS=1) instead of in a second pool of its own. The
    loops present in A and C but not B are the rows M, in B and C but not A
    the columns N, in A and B the reduction K. Each operand's two non-batch
    dimensions must have unit stride on one of them (which picks the
    transpose flag); C must be row major. Other contractions stay loops.

    A contraction whose A and B are bf16 (widened by `arith.extf` in the
    body) and whose C is f32 becomes the same calls to
    `momart_gemm_bf16` instead: the CPU runtime's bf16 GEMM with f32
    accumulation (oneDNN), which takes cblas_sgemm's arguments.
  }];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::func::FuncDialect",
    "::mlir::LLVM::LLVMDialect",
    "::mlir::memref::MemRefDialect",
    "::mlir::scf::SCFDialect"
  ];
}

def LowerLinalgToCpuLoops
    : Pass<"moma-lower-linalg-to-cpu-loops", "::mlir::func::FuncOp"> {
  let summary = "Kernels to loops: parallel at the top, sequential inside a tile";
  let description = [{
    The CPU's threads take the iterations of the shared pipeline's
    `scf.forall` tiles (and of the per-sequence attention loops); a kernel
    inside such a loop becomes plain `scf.for` loops over its tile, which
    LLVM vectorizes, instead of a nested parallel region that OpenMP would
    serialize at the cost of a fork per tile. A kernel at the top of a
    function (one the shared pipeline left whole) becomes an `scf.parallel`
    over its parallel loops, as `convert-linalg-to-parallel-loops` does.

    A reduction inside a tile (a row max or sum of a softmax, a norm's
    statistics) keeps its accumulators in loop-carried values, loaded once
    and stored once, and its combiner is marked `reassoc`: LLVM cannot prove
    the output buffer apart from the inputs, so an accumulator in memory
    would keep the loop scalar, and an FP reduction vectorizes only when it
    may be summed in per-lane partial sums (the order of a sum changes in
    its last bits). Its innermost loop carries `llvm.loop.unroll.disable`:
    LLVM then vectorizes it along the contiguous row, where it would
    otherwise unroll a row of up to a few hundred elements whole and
    vectorize across rows with strided loads (slower to compile, no
    faster to run).
  }];
  let dependentDialects = [
    "::mlir::affine::AffineDialect",
    "::mlir::arith::ArithDialect",
    "::mlir::LLVM::LLVMDialect",
    "::mlir::memref::MemRefDialect",
    "::mlir::scf::SCFDialect"
  ];
}

def ApproximateTranscendentals
    : Pass<"moma-approximate-transcendentals", "::mlir::func::FuncOp"> {
  let summary = "f32 exp and log as polynomials, so that their loops vectorize";
  let description = [{
    `math.exp` and `math.log` on f32 (softmax, cross-entropy, sigmoid,
    silu) become upstream MLIR's polynomial approximations (range
    reduction and a minimax polynomial, a few ulp from libm), written in
    plain arithmetic that LLVM's loop vectorizer turns into AVX-512 code.
    Left as they are they lower to calls of libm's scalar `expf` and `logf`,
    which keep every loop that contains one scalar. Other types and
    functions are left to libm.
  }];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::math::MathDialect",
    "::mlir::vector::VectorDialect"
  ];
}

def ExpandArithForLLVM
    : Pass<"moma-expand-arith-for-llvm", "::mlir::func::FuncOp"> {
  let summary = "Expand the arith ops that LLVM has no instruction for, and "
                "only those";
  let description = [{
    bf16 conversions (GEMM operands rounded f32 -> bf16 to nearest even,
    and widened) become integer bit operations, which vectorize and need no
    compiler-rt or AVX512_BF16 on the machine that runs the artifact; index
    ceil/floor divisions become plain divisions. Upstream's
    -arith-expand does that too, but it also expands `arith.maximumf` and
    `arith.minimumf` into compares and selects, which LLVM's loop
    vectorizer does not take for a reduction: every row maximum (the
    softmax of attention tiles and of the cross-entropy over the
    vocabulary) ran as a scalar loop with a NaN test per element. Left as
    they are they become `llvm.maximum`/`llvm.minimum`, whose reductions
    vectorize; the maximum of the same values in any order is the same
    value, NaN and signed zeros included, so results do not change.
  }];
  let dependentDialects = ["::mlir::arith::ArithDialect"];
}

def OutlineParallelRegions
    : Pass<"moma-outline-parallel-regions", "::mlir::ModuleOp"> {
  let summary = "Move each OpenMP parallel region into a function of its own";
  let description = [{
    On the LLVM dialect, every `omp.parallel` that is not nested in another
    becomes an internal `llvm.func` (named after its function, with a
    `_parallel_N` suffix) taking the values it uses from outside as
    arguments, and is replaced by a call. A training step is hundreds of
    parallel loops in three large functions; LLVM's OpenMP translation
    scans the whole enclosing function for each region it outlines
    (CodeExtractorAnalysisCache), which made translation quadratic: half
    the compile time of a tiny MoD model. In functions of their own each
    scan is short, and code generation gets many small functions to spread
    over its partitions.
  }];
  let dependentDialects = [
    "::mlir::LLVM::LLVMDialect",
    "::mlir::omp::OpenMPDialect"
  ];
}

#endif // MOMAC_TARGET_CPU_PASSES_TD
