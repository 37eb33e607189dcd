//===- Passes.td - Passes of the CUDA target ---------------*- tablegen -*-===//
//
// What only the CUDA target does after the shared pipeline: the shared
// pipeline's row tiles become thread blocks, GEMMs become cuBLAS calls, and
// upstream MLIR's GPU passes outline, lower to NVVM and serialize the
// kernels for sm_90. The CPU target has its own (compiler/Target/CPU).
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_TARGET_CUDA_PASSES_TD
#define MOMAC_TARGET_CUDA_PASSES_TD

include "mlir/Pass/PassBase.td"

def MapTilesToGpu : Pass<"moma-map-tiles-to-gpu", "::mlir::func::FuncOp"> {
  let summary = "Run each scf.forall tile loop as a gpu.launch: a tile per "
                "thread block, each kernel of a tile spread over its threads";
  let description = [{
    The shared pipeline leaves a step as `scf.forall` loops over row tiles,
    each iteration a few fused kernels (`linalg` ops) on its tile plus the
    tile's temporaries. On the GPU, an iteration is a thread block:

    - every outermost `scf.forall` becomes a `gpu.launch` with one block per
      iteration (up to three loop dimensions, the innermost on x) and
      `threads-per-block` threads (a multiple of 128, Hopper's warp
      scheduler granularity);
    - each kernel of the tile becomes loops whose parallel iterations the
      block's threads share cyclically (consecutive threads on consecutive
      elements of the innermost parallel dimension, so global accesses
      coalesce); a `gpu.barrier` follows every kernel, since the next one
      reads what it wrote;
    - a kernel's reduction (parallel loops, then reduction loops, each
      result a single add/mul/min/max/and/or/xor of at most 32 bits) runs
      in one of three ways, whichever takes the fewest steps per thread
      given the extents' constant bounds
      (compiler/Target/CUDA/ThreadDistribution.h): sequentially in the
      thread that owns the parallel iteration; shared by a warp's 32 lanes,
      each combining every 32nd element (consecutive lanes on consecutive
      elements) and the warp combining with `gpu.subgroup_reduce` (a row
      norm or a softmax over 512 columns); or shared by the whole block,
      the warps' totals combined through shared memory (a workgroup buffer
      of the launch) by thread 0 (a sum over one long row). The lanes share
      only a reduction whose innermost loop walks each input's contiguous
      dimension. Every thread runs the same rounds, so each warp reaches
      its shuffles whole. A kernel with no parallel loop that cannot be
      shared runs on thread 0;
    - the tile's temporaries (`memref.alloc` inside the loop) live in one
      scratch buffer allocated around the launch, a slice of it per block,
      sized by each temporary's constant upper bound (a tile has at most
      `step` rows); a temporary without such a bound is an error;
    - scalar stores outside kernels run on thread 0.

    The code inside stays `scf`/`memref`/`arith` for upstream's
    `gpu-kernel-outlining` and `convert-gpu-to-nvvm`.
  }];
  let options = [
    Option<"threadsPerBlock", "threads-per-block", "int64_t",
           /*default=*/"128", "Threads of each block (a multiple of 32)">
  ];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::gpu::GPUDialect",
    "::mlir::linalg::LinalgDialect",
    "::mlir::memref::MemRefDialect",
    "::mlir::scf::SCFDialect"
  ];
}

def ConvertLinalgToCublas
    : Pass<"convert-linalg-to-cublas", "::mlir::ModuleOp"> {
  let summary = "Turn buffer contractions outside tiles into cuBLAS "
                "strided-batched GEMM calls";
  let description = [{
    A contraction the shared GEMM matcher accepts
    (compiler/Codegen/BufferGemm.h: f32 `C += A B`, or bf16 A and B with an
    f32 C) at the top of a function becomes a call to
    `momart_cuda_gemm_f32` (or `momart_cuda_gemm_bf16`): row-major
    operands, the transposes and leading dimensions the matcher found, the
    innermost batch loop (experts, heads) as the call's batch with each
    operand's stride along it, outer batch loops as host loops around the
    call, and beta = 0 when a zero fill of C comes right before (the call
    replaces it). Contractions inside a tile (`scf.forall`) or a
    `gpu.launch` stay generated code: a library call cannot run inside a
    kernel.
  }];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::func::FuncDialect",
    "::mlir::LLVM::LLVMDialect",
    "::mlir::memref::MemRefDialect",
    "::mlir::scf::SCFDialect"
  ];
}

def MapHostCodeToGpu
    : Pass<"moma-map-host-code-to-gpu", "::mlir::func::FuncOp"> {
  let summary = "Run what touches memory between the tiles on the GPU; "
                "allocate on the GPU";
  let description = [{
    After `-convert-linalg-to-cublas` and `-moma-map-tiles-to-gpu`, every
    buffer a step touches is device memory, so the host code left between
    the launches and library calls becomes device work too:

    - a kernel outside a tile (a zero fill, a sum into a scalar) is a
      `gpu.launch` of its own: one thread per iteration of its leading
      parallel loops, `threads-per-block` per block. A reduction is shared
      as in a tile (`-moma-map-tiles-to-gpu`): by a warp per iteration
      (32 threads each), or by one block of `threads-per-block` threads (a
      sum of a whole buffer into a scalar); one that cannot be shared and
      has no leading parallel loop runs on one thread. A copy between
      identity layouts is a `gpu.memcpy`;
    - each maximal stretch of scalar code that loads or stores (token
      counts, a loss over its count, a combine loop over a group's experts)
      runs as one single-thread `gpu.launch`. Its results that later
      kernels use are loaded by those kernels from a small device buffer;
      the ones host code uses (sizes of later buffers and grids) are read
      back with one call to the runtime's `momart_cuda_read_to_host`, which
      waits for the stream: the step's only waits inside an entry point.
      Host ops that do not depend on a stretch (allocations, views,
      constants) move above it instead of ending it. A load of an argument
      marked `moma.host_scalar` (batch_rows, which the runtime passes in
      host memory) is host code, and needs no read;
    - a constant global becomes a device buffer (filled by a kernel when
      it is a splat, copied otherwise);
    - `memref.alloc`/`dealloc` become `gpu.alloc`/`gpu.dealloc`.
  }];
  let options = [
    Option<"threadsPerBlock", "threads-per-block", "int64_t",
           /*default=*/"128", "Threads of each block of a kernel's launch">
  ];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::func::FuncDialect",
    "::mlir::gpu::GPUDialect",
    "::mlir::linalg::LinalgDialect",
    "::mlir::LLVM::LLVMDialect",
    "::mlir::memref::MemRefDialect",
    "::mlir::scf::SCFDialect"
  ];
}

def OrderOnStepStream
    : Pass<"moma-order-on-step-stream", "::mlir::func::FuncOp"> {
  let summary = "Make a step's GPU work asynchronous, in program order on "
                "one stream, waiting only where the host reads";
  let description = [{
    Every `gpu.launch`, `gpu.memcpy`, `gpu.alloc` and `gpu.dealloc` of a
    function becomes `async`, each depending on the previous one, so that
    the lowering (`gpu-to-llvm`) puts them all on the stream of the first
    `gpu.wait async` (the step's stream, which the CUDA runtime also gives
    its cuBLAS and top-k calls: their order with the generated kernels is
    the stream's). The host waits (`gpu.wait` of the chain) only before the
    function returns, so that its results are complete, except in a layer
    function (`moma.layer_function`): its caller's work follows it on the
    same stream, and the caller waits where it returns; the reads of
    `-moma-map-host-code-to-gpu` wait inside the runtime. Unlike upstream
    `gpu-async-region`, a call to the runtime (`momart_cuda_*`) is
    stream-ordered work, not a host side effect to wait for.
  }];
  let dependentDialects = ["::mlir::gpu::GPUDialect"];
}

def MergeKernelModules
    : Pass<"moma-merge-kernel-modules", "::mlir::ModuleOp"> {
  let summary = "Gather the outlined kernels into one gpu.module";
  let description = [{
    `gpu-kernel-outlining` puts each kernel in a `gpu.module` of its own;
    a step has hundreds. This pass moves them all into one module named
    `module-name` and points every `gpu.launch_func` at it, so that the
    artifact carries one PTX and one cubin, loaded with one
    `cuModuleLoadData`, and `ptxas -v` reports on every kernel at once.
    A kernel identical to an earlier one but for its name (the same
    kernel of another layer: shapes are constants, buffers arguments) is
    dropped and its launches use the earlier one, so a model's kernels are
    compiled about once rather than once per layer.
    Each kernel takes its module's (unique) name, and `nvvm.minctasm = 1`:
    given only the block size, ptxas would cap registers at 32 per thread
    (16 blocks per SM) and spill.
  }];
  let options = [
    Option<"moduleName", "module-name", "std::string",
           /*default=*/"\"momac_kernels\"", "The merged gpu.module's name">
  ];
  let dependentDialects = ["::mlir::gpu::GPUDialect"];
}

def LowerSubgroupReduceToShuffles
    : Pass<"moma-lower-subgroup-reduce-to-shuffles"> {
  let summary = "Combine a warp's values (gpu.subgroup_reduce) with "
                "butterfly shuffles";
  let description = [{
    The reductions `-moma-map-tiles-to-gpu` and `-moma-map-host-code-to-gpu`
    share among a warp's lanes end in a `gpu.subgroup_reduce` over the 32
    lanes. This pass applies upstream MLIR's patterns, which have no pass of
    their own: five rounds of `gpu.shuffle xor` (offsets 1 to 16), each
    followed by the combining op, after which every lane holds the warp's
    total; `convert-gpu-to-nvvm` then makes each shuffle an
    `nvvm.shfl.sync bfly` over the full warp. Values narrower than 32 bits
    travel widened; wider ones in 32-bit pieces. Every lane must reach the
    reduction, which the mapping guarantees (warp-uniform control flow).
  }];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::gpu::GPUDialect",
    "::mlir::vector::VectorDialect"
  ];
}

def EmulateGpuOnHost
    : Pass<"moma-emulate-gpu-on-host", "::mlir::func::FuncOp"> {
  let summary = "Run the CUDA mapping's launches as host loops (testing "
                "the mapping without a GPU)";
  let description = [{
    For `momac --target=cuda-emulated`: after `-moma-map-tiles-to-gpu` and
    `-moma-map-host-code-to-gpu` (before `-moma-order-on-step-stream`),
    each `gpu.launch` becomes loops over its blocks; inside, each op that
    depends on the thread id (a kernel's loop spread over the threads, a
    thread-0 guard, with the index arithmetic that feeds it) runs in a loop
    over the block's threads and everything else once; barriers go, since
    each phase then completes before the next. A warp's combination
    (`gpu.subgroup_reduce`) goes through memory: each thread stores its
    value in a slot, and the lane that uses the total reads its warp's 32
    slots back in a later thread loop; the launch's shared memory
    (workgroup buffers) is a host buffer the blocks use in turn.
    `gpu.alloc`, `gpu.dealloc`
    and `gpu.memcpy` become their memref counterparts. The result computes
    what the GPU would, block by block and thread by thread, so the e2e
    tests check the CUDA mapping's numbers on the CPU.
  }];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::memref::MemRefDialect",
    "::mlir::scf::SCFDialect"
  ];
}

#endif // MOMAC_TARGET_CUDA_PASSES_TD
