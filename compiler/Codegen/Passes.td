//===- Passes.td - Code generation passes every target shares -*- tablegen -*-===//
//
// Passes on linalg that the shared pipeline (compiler/Pipelines) runs before
// the target split, as IREE's Codegen/Common: fusion now, tiling next. What
// only one target does lives under compiler/Target/<target>.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_CODEGEN_PASSES_TD
#define MOMAC_CODEGEN_PASSES_TD

include "mlir/Pass/PassBase.td"

def FuseElementwiseProducers
    : Pass<"moma-fuse-elementwise-producers", "::mlir::func::FuncOp"> {
  let summary = "Fuse elementwise kernels into the kernels that consume them";
  let description = [{
    On tensors, an all-parallel `linalg.generic` (an elementwise chain: the
    residual add before a norm, SwiGLU's silu and gate product, a router's
    sigmoid, the scaling of a gradient) is folded into the generic that
    consumes it, elementwise or reduction, with upstream linalg's
    elementwise fusion patterns, so that its result is never written to
    memory. The control decides what is worth fusing:

    - the producer's result has no other user, so nothing is computed twice
      and the buffer disappears;
    - the consumer is not a contraction (`C += A B`): those stay whole for
      the targets' GEMM libraries;
    - when the consumer broadcasts the producer (reads it in fewer
      dimensions than it iterates over), the producer is fused only if its
      body has no `math` op: recomputing an add per element is cheaper than
      a round trip through memory, recomputing an `exp` or `rsqrt` is not.

    Both the forward kernels and the gradient kernels that autodiff emits
    go through it; it runs before bufferization.
  }];
  let dependentDialects = [
    "::mlir::affine::AffineDialect",
    "::mlir::linalg::LinalgDialect",
    "::mlir::tensor::TensorDialect"
  ];
}

def TileAndFuse : Pass<"moma-tile-and-fuse", "::mlir::func::FuncOp"> {
  let summary = "Tile kernels over rows into scf.forall and fuse their producers";
  let description = [{
    Every kernel at the top of a function that is not a contraction (GEMMs
    stay whole for the targets' libraries) and whose outermost loop is
    parallel is tiled along that loop into an `scf.forall` of `tile-rows`
    rows per iteration (leading parallel loops shorter than that, such as
    the experts of a stacked [E, k, f] kernel, one iteration per tile, and
    the next loop into rows), with upstream's tile-and-fuse
    (`scf::tileConsumerAndFuseProducersUsingSCF`). The kernels that produce
    its operands (elementwise chains, the row reductions of a norm or a
    softmax, the fills that initialize them) are fused into the same loop:
    a LayerNorm or an RMSNorm becomes one loop over blocks of rows whose
    statistics never leave the block. Kernels are visited from the last to
    the first, so each loop takes in as much of its producer chain as it can.

    A producer that kernels after the loop also read stays computed once:
    the loop yields its value for them (`yieldProducerReplacement`). One
    that several kernels inside the loop read is fused once per reader;
    the CSE that follows in the pipeline merges the copies. Contractions are
    never fused, nor are kernels already inside a loop (the per-sequence
    attention), nor operands read through `tensor.extract` (gathers).

    The loops are what each target maps: the CPU target runs the iterations
    on OpenMP threads and turns each tile into sequential, vectorizable
    loops; the CUDA target will map them to thread blocks.
  }];
  let options = [
    Option<"tileRows", "tile-rows", "int64_t", /*default=*/"32",
           "Iterations of the outermost loop per tile">
  ];
  let dependentDialects = [
    "::mlir::affine::AffineDialect",
    "::mlir::linalg::LinalgDialect",
    "::mlir::scf::SCFDialect",
    "::mlir::tensor::TensorDialect"
  ];
}

def CloneSharedFills
    : Pass<"moma-clone-shared-fills", "::mlir::func::FuncOp"> {
  let summary = "Give every kernel its own copy of a fill it accumulates into";
  let description = [{
    A GEMM or a reduction accumulates into its destination, usually a
    `linalg.fill` of zeros (or of -inf for a max). CSE merges identical fills,
    so one zero tensor ends up as the destination of several kernels, and
    bufferization then copies it once for each kernel that writes into it.
    This pass clones such a fill (on a `tensor.empty`) in front of each of
    its users, so that each kernel zeroes its own buffer and no copy is made
    (and the CPU target can fold a zero fill right before a GEMM into the
    GEMM's beta = 0).
  }];
  let dependentDialects = [
    "::mlir::linalg::LinalgDialect",
    "::mlir::tensor::TensorDialect"
  ];
}

def OutlineLayers : Pass<"moma-outline-layers", "::mlir::ModuleOp"> {
  let summary = "Move each layer's forward, backward and optimizer update "
                "into a function per kind of layer, called once per layer";
  let description = [{
    An entry point holds every layer's code: @grad the forward of layer 0
    to L-1, then their backward from L-1 to 0; @optimizer_step the updates
    of each layer's parameters. Most layers are the same computation on
    other buffers, yet each would be fused, tiled, bufferized and compiled
    again, and one-shot bufferization grows faster than linearly with a
    function's length. This pass, run on the kernels before fusion (linalg
    on tensors, after CSE), makes each phase of each layer a private
    function (`moma.layer_function`) and the entry points calls of them;
    then functions that are the same (signature and body, locations aside)
    become one, so that the rest of the pipeline sees each kind of layer
    (dense, MoE with its groups, MoD, with their shapes) once per phase.

    A run is a maximal stretch of an entry point's ops whose locations name
    one layer (`layers.<l>.`, as the front end and autodiff name them).
    Constants, empty tensors and fills do not break a run: CSE shares them
    between layers, and a function clones those it uses. Everything else a
    run reads is an argument, in first-use order, and what it computes for
    later ops a result. The calls keep the runs' order, so the step
    computes what it computed before, bit for bit. Free ops the entry point
    still uses move in front of their first user; those only the runs used
    are erased.

    - A pure computation of a run that reads only what every layer reads
      alike (the entry point's arguments other than a layer's parameters,
      what the entry point computes outside the layers) and that another
      layer's run reads (what CSE merged: the RoPE tables of the positions,
      a shared modality partition) moves in front of the run and stays in
      the entry point, computed once.
    - Static offsets of a slice of an entry-point argument that several
      layers read (each layer's rows of the router noise) become
      arguments.
    - The run's results that the entry point writes into its
      out-parameters (`bufferization.materialize_in_destination`; not the
      scalar losses) are written by the function, which takes the
      out-parameter: the kernels computing a gradient still write it in
      place. An out-parameter written in place of an argument (AdamW's)
      stays paired with it (`moma.in_place`), for
      -moma-write-results-in-place.

    - Scalar arithmetic other than on indices that the run reads from
      what the entry point computes (AdamW's clip factor from the gradient
      norm) is recomputed in the function from the tensors it comes from;
      a scalar the run computes from its tensors and the entry point uses
      (a MoD group's token count) is recomputed after the call from the
      tensors the function returns. A target keeping the step's data on a
      device thus passes tensors, not scalars it would have to read back.
      A host scalar argument (`moma.host_scalar`, batch_rows) is read in
      the entry point, as before.

    Every target runs it (CPU, cuda, cuda-emulated): the layer functions'
    results are freed without run-time alias checks
    (-moma-dealloc-fresh-call-results), which the CUDA mapping would
    otherwise run as reads from the GPU.
  }];
  let statistics = [
    Statistic<"numCalls", "calls", "Layer phases replaced by a call">,
    Statistic<"numFunctions", "functions",
              "Distinct layer functions kept">
  ];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::bufferization::BufferizationDialect",
    "::mlir::func::FuncDialect",
    "::mlir::tensor::TensorDialect"
  ];
}

def DeallocFreshCallResults
    : Pass<"moma-dealloc-fresh-call-results", "::mlir::ModuleOp"> {
  let summary = "Free the buffers a call returns fresh without run-time alias "
                "checks";
  let description = [{
    After ownership-based deallocation, a caller frees the buffers a call
    returns in one `bufferization.dealloc` with everything else it owns.
    The upstream simplification splits off only the buffers it can prove
    distinct, and a call's result may, as far as it knows, be any of the
    call's operands: so every layer function's results, and every buffer
    passed to a layer function, stay in one deallocation that checks at
    run time, pair by pair, which of them are the same buffer (99 buffers
    in tiny moe_4t4i's @grad, 315 conditional frees in 64 layers'; on the
    CUDA target each check would be a read from the GPU).

    A callee's result is *fresh* when every buffer it may be, as
    BufferViewFlowAnalysis traces it, is allocated in the callee (the
    function-boundary ABI of ownership-based deallocation already copies a
    returned argument), and no other memref result may be the same
    allocation. What the layer functions (-moma-outline-layers) return is
    fresh. A fresh result is distinct from every buffer alive at the call
    and from every buffer allocated while it lives, so it may be freed on
    its own, unless another buffer of the same deallocation is traced back
    to it (a view of it, or a later call's result that took it) or comes
    from an op the analysis does not know. Other calls' results are taken
    to be their callees' own buffers, as the function-boundary ABI of
    ownership-based deallocation has it (an external function returning a
    global buffer would break that ABI for upstream's deallocation too).

    Each such buffer gets a `bufferization.dealloc` of its own, with the
    same condition and retained buffers (the retained ownerships are or-ed);
    the rest stay together. It runs right after ownership-based
    deallocation, before the upstream simplification: the callers' own
    allocations, no longer beside call results, split there too, and the
    simplification's pairwise alias queries see smaller deallocations.
  }];
  let statistics = [
    Statistic<"numSplit", "split",
              "Fresh call results given a deallocation of their own">
  ];
  let dependentDialects = ["::mlir::arith::ArithDialect"];
}

def ShardParameters : Pass<"moma-shard-parameters", "::mlir::ModuleOp"> {
  let summary = "FSDP: gather each unit's parameters around its uses, "
                "reduce-scatter its gradients";
  let description = [{
    On bufferized functions marked `moma.sharded_parameters`
    (-moma-synthesize-sharded-step), whose parameter arguments and gradient
    out-parameters carry their FSDP unit and offset (lib/config/ShardUnits.h):

    - The uses of a unit's parameters, in program order, form windows: runs
      of uses with no other unit's parameter in between (a layer's forward,
      its recomputation and backward, ...). Before a window, the unit's
      parameters are gathered into one flat buffer, of which each parameter
      is a view, and the buffer is freed right after the window's last use.
      The gather of the next window is started when the current one begins
      (`momart_fsdp_all_gather_start`) and waited for just before its
      first use (`momart_fsdp_all_gather_wait`), so that communication
      overlaps the current unit's compute; at most two units are gathered
      at a time.
    - A unit's gradients are written into one flat buffer, allocated before
      the first write and handed to `momart_fsdp_reduce_scatter` right after
      the last, then freed: the runtime sums them over the ranks into its
      gradient shard.
    - The parameter arguments and gradient out-parameters are removed: the
      entry point takes the data only, the runtime owns every shard.

    The collectives are calls into the runtime, which implements them with
    its communicator (MPI on CPUs, NCCL on GPUs) for any number of ranks.
    It runs at the end of the shared pipeline, after buffer deallocation.
  }];
  let dependentDialects = [
    "::mlir::LLVM::LLVMDialect",
    "::mlir::arith::ArithDialect",
    "::mlir::func::FuncDialect",
    "::mlir::memref::MemRefDialect"
  ];
}

def WriteResultsInPlace
    : Pass<"moma-write-results-in-place", "::mlir::func::FuncOp"> {
  let summary = "Write a result marked moma.in_place into its argument's "
                "buffer";
  let description = [{
    On a bufferized entry point, an out-parameter marked `moma.in_place`
    (AdamW's new parameters and moments) is the buffer of the argument of
    the same name: the caller passes it for both (the ABI, which
    `bindByName` checks). Only a result that one element-wise kernel
    computes from that argument is marked, so writing it into the argument
    never overwrites an element that is still to be read. This pass says so
    in the IR: the out-parameter's uses become uses of the argument (the
    out-parameter stays in the signature, unused).

    Then a kernel that updates a tensor reads and writes one memref, and
    LLVM's vectorizer sees one pointer. With two, it guards the vector loop
    with a check that the pointers are at least a vector apart, which an
    update in place fails at run time: the whole optimizer step ran its
    scalar loop.
  }];
  let dependentDialects = ["::mlir::memref::MemRefDialect"];
}

def OutlineHostLoops : Pass<"moma-outline-host-loops", "::mlir::ModuleOp"> {
  let summary = "Move the loops of an entry point's host code into functions "
                "of their own";
  let description = [{
    An entry point is one long sequence of host code per step: allocations,
    size arithmetic, kernel launches and library calls, and a few serial
    loops (the counts of a modality partition, a top-k's bookkeeping). Each
    `scf.for` at the top of a function's body becomes a function of its own
    (private, LLVM internal linkage), called in its place, with the values
    it uses from outside as arguments (constants are cloned in instead, so
    the callee still sees them).

    This lets the artifact compile the entry points' own code cheaply (their
    length makes LLVM's optimizing code generation superlinear, see
    emitHostObjects) while the loops, which do the work, are compiled as the
    kernels are; identical loops of different layers become one function
    there. It also keeps SCF-to-CF from splitting a block of thousands of
    operations once per loop.

    It runs on host code being lowered to LLVM, after memrefs have become
    LLVM descriptors and before SCF becomes control flow. A loop that uses a
    value of memref type from outside stays in place: the entry points pass
    memrefs as bare pointers, which cannot carry dynamic sizes; so does a
    loop that allocates on the stack.
  }];
  let dependentDialects = [
    "::mlir::LLVM::LLVMDialect",
    "::mlir::func::FuncDialect",
    "::mlir::scf::SCFDialect"
  ];
}

def SplitLongBlocks : Pass<"moma-split-long-blocks", "::mlir::func::FuncOp"> {
  let summary = "Cut a function's long blocks into a chain of short ones";
  let description = [{
    An entry point's body is one block of straight-line host code, tens of
    thousands of operations long on a deep model. Lowering a structured op
    in it (SCF-to-CF, once per `scf.if` that buffer deallocation leaves to
    free a buffer it may own) splits the block at that op, which moves
    every operation after it: the cost of the whole lowering grew with the
    square of the function's length (2.8 of 25 s for 64 layers of 90m
    moe_4t4i). Cut first into blocks of at most `max-operations`
    operations chained by `cf.br`, each split moves at most that many.

    The cuts change no value: the blocks run one after another, each
    dominating the next. A block is cut only after its last `llvm.alloca`,
    so that the stack allocations stay in the entry block (static frame
    slots).
  }];
  let options = [
    Option<"maxOperations", "max-operations", "unsigned", "256",
           "The most operations a block keeps">
  ];
  let dependentDialects = ["::mlir::cf::ControlFlowDialect"];
}

#endif // MOMAC_CODEGEN_PASSES_TD
