//===- EmulateGpuOnHost.cpp - The CUDA mapping, run on the CPU ------------===//
//
// See Passes.td. The CUDA target's mapping passes decide what each block and
// thread computes; this pass runs exactly that on the host, so that the
// mapping's numbers can be tested against the reference on a machine
// without a GPU (momac --target=cuda-emulated).
//
// A launch body is what every thread of a block runs. After the mapping,
// thread ids reach only two kinds of op: the loops that spread a kernel's
// iterations over the threads and the guards that give work to thread 0,
// neither of which defines a value used later. Each such op (with the
// thread-dependent arithmetic that feeds it) runs inside a loop over the
// block's threads; everything else is uniform and runs once. A barrier
// then orders nothing that program order does not: it goes.
//
// A warp's combination (`gpu.subgroup_reduce`) goes through memory, as
// shared memory would on the GPU: each thread stores its value in a slot
// of its own, and the lane that uses the total reads back its warp's 32
// slots and combines them. The store and the read are separate thread
// loops, so every value is in place before any is read. Shared memory
// (the launch's workgroup buffers) is one host buffer, reused by each
// block in turn.
//
//===----------------------------------------------------------------------===//

#include "compiler/Target/CUDA/Passes.h"
#include "compiler/Target/CUDA/ThreadDistribution.h"

#include "mlir/Analysis/SliceAnalysis.h"
#include "mlir/Dialect/GPU/Utils/GPUUtils.h"
#include "mlir/Dialect/SCF/Utils/Utils.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

namespace momac {
#define GEN_PASS_DEF_EMULATEGPUONHOST
#include "compiler/Target/CUDA/Passes.h.inc"
} // namespace momac

using namespace mlir;

namespace {

/// Whether `op` or an op inside it may write memory (unknown effects
/// count as writes).
bool mayWrite(Operation *op) {
  std::optional<SmallVector<MemoryEffects::EffectInstance>> effects =
      getEffectsRecursively(op);
  return !effects ||
         llvm::any_of(*effects, [](const MemoryEffects::EffectInstance &e) {
           return isa<MemoryEffects::Write>(e.getEffect());
         });
}

/// Each `gpu.subgroup_reduce` of `body` through memory: the value stored
/// in the thread's slot of a buffer allocated before `launch` (one per
/// op, freed after it), then the warp's slots loaded and combined.
LogicalResult reduceWarpsThroughMemory(IRRewriter &rewriter,
                                       gpu::LaunchOp launch, Value threadId,
                                       Value threads) {
  SmallVector<gpu::SubgroupReduceOp> reductions;
  launch.getBody().walk(
      [&](gpu::SubgroupReduceOp op) { reductions.push_back(op); });
  for (gpu::SubgroupReduceOp op : reductions) {
    if (op.getClusterSize())
      return op.emitError("moma-emulate-gpu-on-host: a clustered "
                          "gpu.subgroup_reduce");
    Location loc = op.getLoc();
    Type type = op.getValue().getType();
    rewriter.setInsertionPoint(launch);
    Value slots = memref::AllocOp::create(
        rewriter, loc, MemRefType::get({ShapedType::kDynamic}, type),
        ValueRange{threads});
    rewriter.setInsertionPointAfter(launch);
    memref::DeallocOp::create(rewriter, loc, slots);

    rewriter.setInsertionPoint(op);
    memref::StoreOp::create(rewriter, loc, op.getValue(), slots, threadId);
    Value warpSize = arith::ConstantIndexOp::create(rewriter, loc,
                                                    momac::kWarpSize);
    Value firstLane = arith::MulIOp::create(
        rewriter, loc,
        arith::DivUIOp::create(rewriter, loc, threadId, warpSize), warpSize);
    Value one = arith::ConstantIndexOp::create(rewriter, loc, 1);
    // The combination runs where the value is used: when every use is in
    // one block inside the op's (the warp's first lane writing the total),
    // the other lanes need not combine.
    Operation *firstUser = nullptr;
    for (Operation *user : op->getUsers()) {
      if (firstUser && user->getBlock() != firstUser->getBlock()) {
        firstUser = nullptr;
        break;
      }
      if (!firstUser || user->isBeforeInBlock(firstUser))
        firstUser = user;
    }
    if (firstUser && firstUser->getBlock() != op->getBlock())
      rewriter.setInsertionPoint(firstUser);
    Value first =
        memref::LoadOp::create(rewriter, loc, slots, ValueRange{firstLane});
    vector::CombiningKind kind = gpu::convertReductionKind(op.getOp());
    auto loop = scf::ForOp::create(
        rewriter, loc, one, warpSize, one, ValueRange{first},
        [&](OpBuilder &b, Location loc, Value lane, ValueRange total) {
          Value value = memref::LoadOp::create(
              b, loc, slots,
              ValueRange{arith::AddIOp::create(b, loc, firstLane, lane)});
          scf::YieldOp::create(
              b, loc,
              vector::makeArithReduction(b, loc, kind, value, total[0]));
        });
    rewriter.replaceOp(op, loop.getResults());
  }
  return success();
}

/// Runs each op of `body` that depends on `threadIds` inside a loop over
/// the block's `threads`, with the thread-dependent ops that feed it.
LogicalResult serializeThreads(IRRewriter &rewriter, Block &body,
                               Value threadId, Value threads) {
  // Every op (at any depth) that depends on the thread id.
  llvm::SetVector<Operation *> dependent;
  ForwardSliceOptions options;
  getForwardSlice(threadId, &dependent, options);
  auto dependsOnThread = [&](Operation *op) {
    if (dependent.contains(op))
      return true;
    bool found = false;
    op->walk([&](Operation *inner) { found |= dependent.contains(inner); });
    return found;
  };
  // The sinks: ops of `body` (or of uniform regions inside it) that depend
  // on the thread and whose results nothing else uses.
  SmallVector<Operation *> sinks;
  auto operandsDependOnThread = [&](Operation *op) {
    return llvm::any_of(op->getOperands(), [&](Value v) {
      Operation *def = v.getDefiningOp();
      return v == threadId || (def && dependent.contains(def));
    });
  };
  std::function<LogicalResult(Block &)> collect =
      [&](Block &block) -> LogicalResult {
    for (Operation &op : block) {
      if (!dependsOnThread(&op))
        continue;
      // Uniform control flow (its bounds and conditions the same for every
      // thread) keeps its place: barriers inside it order its phases.
      if (isa<scf::ForOp, scf::IfOp, scf::WhileOp>(op) &&
          !operandsDependOnThread(&op)) {
        for (Region &region : op.getRegions())
          for (Block &inner : region)
            if (failed(collect(inner)))
              return failure();
        continue;
      }
      bool used = llvm::any_of(op.getResults(),
                               [](Value v) { return !v.use_empty(); });
      if (!used) {
        sinks.push_back(&op);
        continue;
      }
      // Thread-dependent arithmetic, and loops that only read (a lane's
      // partial reduction): cloned into the sinks that use them.
      if (op.getNumRegions() == 0 || !mayWrite(&op))
        continue;
      return op.emitError("moma-emulate-gpu-on-host: a thread-dependent '")
             << op.getName() << "' with results";
    }
    return success();
  };
  if (failed(collect(body)))
    return failure();

  for (Operation *sink : sinks) {
    // The thread-dependent ops the sink needs, in program order.
    BackwardSliceOptions backward;
    backward.inclusive = false;
    backward.omitUsesFromAbove = false;
    backward.filter = [&](Operation *op) { return dependent.contains(op); };
    llvm::SetVector<Operation *> producers;
    if (failed(getBackwardSlice(sink, &producers, backward)))
      return sink->emitError("moma-emulate-gpu-on-host: cannot slice");
    rewriter.setInsertionPoint(sink);
    Location loc = sink->getLoc();
    Value zero = arith::ConstantIndexOp::create(rewriter, loc, 0);
    Value one = arith::ConstantIndexOp::create(rewriter, loc, 1);
    auto loop = scf::ForOp::create(rewriter, loc, zero, threads, one);
    rewriter.setInsertionPointToStart(loop.getBody());
    IRMapping mapping;
    mapping.map(threadId, loop.getInductionVar());
    for (Operation *producer : producers)
      rewriter.clone(*producer, mapping);
    rewriter.clone(*sink, mapping);
    rewriter.eraseOp(sink);
  }
  // The thread-dependent arithmetic outside the thread loops is now unused.
  llvm::SetVector<Operation *> left;
  getForwardSlice(threadId, &left, options);
  // Erased in rounds, users before their operands (an op with regions
  // takes what they hold with it).
  while (true) {
    SmallVector<Operation *> dead;
    body.walk<WalkOrder::PreOrder>([&](Operation *op) {
      if (!left.contains(op) || !isOpTriviallyDead(op))
        return WalkResult::advance();
      dead.push_back(op);
      return WalkResult::skip();
    });
    if (dead.empty())
      break;
    for (Operation *op : dead)
      rewriter.eraseOp(op);
  }
  return success();
}

struct EmulateGpuOnHostPass
    : momac::impl::EmulateGpuOnHostBase<EmulateGpuOnHostPass> {
  void runOnOperation() override {
    IRRewriter rewriter(&getContext());
    SmallVector<gpu::LaunchOp> launches;
    getOperation().walk([&](gpu::LaunchOp launch) { launches.push_back(launch); });
    for (gpu::LaunchOp launch : launches)
      if (failed(emulateLaunch(rewriter, launch)))
        return signalPassFailure();

    // Device memory is host memory; copies are copies; barriers go.
    SmallVector<Operation *> ops;
    getOperation().walk([&](Operation *op) {
      if (isa<gpu::AllocOp, gpu::DeallocOp, gpu::MemcpyOp, gpu::BarrierOp>(op))
        ops.push_back(op);
    });
    for (Operation *op : ops) {
      rewriter.setInsertionPoint(op);
      if (auto alloc = dyn_cast<gpu::AllocOp>(op)) {
        auto host = memref::AllocOp::create(
            rewriter, alloc.getLoc(), alloc.getMemref().getType(),
            alloc.getDynamicSizes(), alloc.getSymbolOperands(),
            rewriter.getI64IntegerAttr(64));
        rewriter.replaceAllUsesWith(alloc.getMemref(), host);
      } else if (auto dealloc = dyn_cast<gpu::DeallocOp>(op)) {
        memref::DeallocOp::create(rewriter, dealloc.getLoc(),
                                  dealloc.getMemref());
      } else if (auto copy = dyn_cast<gpu::MemcpyOp>(op)) {
        memref::CopyOp::create(rewriter, copy.getLoc(), copy.getSrc(),
                               copy.getDst());
      }
      rewriter.eraseOp(op);
    }
  }

  LogicalResult emulateLaunch(IRRewriter &rewriter, gpu::LaunchOp launch) {
    if (launch.getAsyncToken())
      return launch.emitError("moma-emulate-gpu-on-host: expects launches "
                              "before moma-order-on-step-stream");
    Block &body = launch.getBody().front();
    gpu::KernelDim3 threadIds = launch.getThreadIds();
    gpu::KernelDim3 blockSize = launch.getBlockSizeOperandValues();
    // The mapping uses x only; y and z are 0.
    rewriter.setInsertionPointToStart(&body);
    Value zero = arith::ConstantIndexOp::create(rewriter, launch.getLoc(), 0);
    rewriter.replaceAllUsesWith(threadIds.y, zero);
    rewriter.replaceAllUsesWith(threadIds.z, zero);
    if (failed(reduceWarpsThroughMemory(rewriter, launch, threadIds.x,
                                        blockSize.x)) ||
        failed(serializeThreads(rewriter, body, threadIds.x, blockSize.x)))
      return failure();

    // The blocks: nested loops over z, y, x.
    Location loc = launch.getLoc();
    rewriter.setInsertionPoint(launch);
    gpu::KernelDim3 grid = launch.getGridSizeOperandValues();
    Value lb = arith::ConstantIndexOp::create(rewriter, loc, 0);
    Value step = arith::ConstantIndexOp::create(rewriter, loc, 1);
    scf::LoopNest nest = scf::buildLoopNest(
        rewriter, loc, ValueRange{lb, lb, lb},
        ValueRange{grid.z, grid.y, grid.x}, ValueRange{step, step, step});
    Block *inner = nest.loops.back().getBody();
    gpu::KernelDim3 blockIds = launch.getBlockIds();
    gpu::KernelDim3 gridArgs = launch.getGridSize();
    gpu::KernelDim3 blockArgs = launch.getBlockSize();
    IRMapping mapping;
    // Shared memory: one host buffer per workgroup buffer, each block's
    // work done before the next block's starts.
    for (BlockArgument shared : launch.getWorkgroupAttributions()) {
      auto type = cast<MemRefType>(shared.getType());
      rewriter.setInsertionPoint(nest.loops.front());
      Value host = memref::AllocOp::create(
          rewriter, loc,
          MemRefType::get(type.getShape(), type.getElementType()));
      rewriter.setInsertionPointAfter(nest.loops.front());
      memref::DeallocOp::create(rewriter, loc, host);
      mapping.map(shared, host);
    }
    mapping.map(blockIds.z, nest.loops[0].getInductionVar());
    mapping.map(blockIds.y, nest.loops[1].getInductionVar());
    mapping.map(blockIds.x, nest.loops[2].getInductionVar());
    mapping.map(gridArgs.x, grid.x);
    mapping.map(gridArgs.y, grid.y);
    mapping.map(gridArgs.z, grid.z);
    mapping.map(blockArgs.x, blockSize.x);
    mapping.map(blockArgs.y, launch.getBlockSizeY());
    mapping.map(blockArgs.z, launch.getBlockSizeZ());
    rewriter.setInsertionPoint(inner->getTerminator());
    for (Operation &op : body.without_terminator())
      rewriter.clone(op, mapping);
    rewriter.eraseOp(launch);
    return success();
  }
};

} // namespace
