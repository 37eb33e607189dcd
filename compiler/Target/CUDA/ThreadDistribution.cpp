//===- ThreadDistribution.cpp - Kernels spread over GPU threads -----------===//

#include "compiler/Target/CUDA/ThreadDistribution.h"

#include "compiler/Codegen/KernelIteration.h"

#include "mlir/Analysis/SliceAnalysis.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Arith/Utils/Utils.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/Linalg/Transforms/Transforms.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/Utils/Utils.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "mlir/Interfaces/ValueBoundsOpInterface.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/MathExtras.h"

using namespace mlir;
using namespace momac;

namespace {

Value indexConstant(OpBuilder &b, Location loc, int64_t value) {
  return arith::ConstantIndexOp::create(b, loc, value);
}

/// Loops of `parallel` as nested sequential loops (a kernel's parallel loops
/// under a reduction loop: the thread that owns the outer iteration runs
/// them all).
void sequentialize(IRRewriter &rewriter, scf::ParallelOp parallel) {
  rewriter.setInsertionPoint(parallel);
  scf::buildLoopNest(
      rewriter, parallel.getLoc(), parallel.getLowerBound(),
      parallel.getUpperBound(), parallel.getStep(),
      [&](OpBuilder &b, Location, ValueRange ivs) {
        IRMapping mapping;
        mapping.map(parallel.getInductionVars(), ivs);
        for (Operation &op : parallel.getBody()->without_terminator())
          b.clone(op, mapping);
      });
  rewriter.eraseOp(parallel);
}

/// `linear` as the indices of a row-major space of `sizes` (the last
/// varies fastest); no sizes give no indices.
SmallVector<Value> delinearize(OpBuilder &b, Location loc, Value linear,
                               ArrayRef<Value> sizes) {
  SmallVector<Value> indices(sizes.size());
  Value rest = linear;
  for (int64_t i = int64_t(sizes.size()) - 1; i > 0; --i) {
    indices[i] = arith::RemUIOp::create(b, loc, rest, sizes[i]);
    rest = arith::DivUIOp::create(b, loc, rest, sizes[i]);
  }
  if (!sizes.empty())
    indices[0] = rest;
  return indices;
}

//===----------------------------------------------------------------------===//
// Reductions shared by a warp or a block
//===----------------------------------------------------------------------===//

/// A reduction extent nothing bounds: taken as large.
constexpr int64_t kUnknownExtent = 4096;
/// Threads an H100/H200 keeps resident at once (132 SMs, 2048 each): a
/// grid sized to a kernel gains nothing from more.
constexpr int64_t kResidentThreads = 132 * 2048;
/// Steps a thread spends combining its lanes' partial results: five
/// shuffle-and-combine rounds for a warp; for a block, those plus a
/// shared-memory round, two barriers and one thread combining the warps.
constexpr int64_t kWarpCombineSteps = 10;
constexpr int64_t kBlockCombineSteps = 40;

/// The `gpu.subgroup_reduce` operation of a combiner, if it has one.
std::optional<gpu::AllReduceOperation> combiningKind(Operation *combiner) {
  using Kind = gpu::AllReduceOperation;
  return llvm::TypeSwitch<Operation *, std::optional<Kind>>(combiner)
      .Case<arith::AddFOp, arith::AddIOp>([](auto) { return Kind::ADD; })
      .Case<arith::MulFOp, arith::MulIOp>([](auto) { return Kind::MUL; })
      .Case<arith::MaximumFOp>([](auto) { return Kind::MAXIMUMF; })
      .Case<arith::MinimumFOp>([](auto) { return Kind::MINIMUMF; })
      .Case<arith::MaxNumFOp>([](auto) { return Kind::MAXNUMF; })
      .Case<arith::MinNumFOp>([](auto) { return Kind::MINNUMF; })
      .Case<arith::MaxSIOp>([](auto) { return Kind::MAXSI; })
      .Case<arith::MinSIOp>([](auto) { return Kind::MINSI; })
      .Case<arith::MaxUIOp>([](auto) { return Kind::MAXUI; })
      .Case<arith::MinUIOp>([](auto) { return Kind::MINUI; })
      .Case<arith::AndIOp>([](auto) { return Kind::AND; })
      .Case<arith::OrIOp>([](auto) { return Kind::OR; })
      .Case<arith::XOrIOp>([](auto) { return Kind::XOR; })
      .Default([](Operation *) { return std::nullopt; });
}

/// Each result's combiner, for a kernel whose reduction threads can share.
struct SharedReduction {
  SmallVector<Operation *> combiners;
  SmallVector<gpu::AllReduceOperation> kinds;
};

FailureOr<SharedReduction> matchSharedReduction(linalg::LinalgOp kernel) {
  if (!kernel.hasPureBufferSemantics() || kernel.getNumReductionLoops() == 0)
    return failure();
  // Parallel loops, then reduction loops.
  auto iterators = kernel.getIteratorTypesArray();
  unsigned numParallel = kernel.getNumParallelLoops();
  for (auto [i, iterator] : llvm::enumerate(iterators))
    if ((i < numParallel) != (iterator == utils::IteratorType::parallel))
      return failure();
  // Each result a single combiner `gpu.subgroup_reduce` has, over at most
  // 32 bits (a shuffle's width), at positions only the parallel loops set.
  SharedReduction reduction;
  SmallVector<BlockArgument> outputs(kernel.getRegionOutputArgs());
  for (OpOperand &init : kernel.getDpsInitsMutable()) {
    AffineMap map = kernel.getMatchingIndexingMap(&init);
    for (unsigned loop = numParallel; loop < map.getNumDims(); ++loop)
      if (map.isFunctionOfDim(loop))
        return failure();
    for (OpOperand *input : kernel.getDpsInputOperands())
      if (input->get() == init.get())
        return failure();
    SmallVector<Operation *> combiners;
    unsigned position = init.getOperandNumber() - kernel.getNumDpsInputs();
    if (!matchReduction(outputs, position, combiners) ||
        combiners.size() != 1)
      return failure();
    Type type = outputs[position].getType();
    std::optional<gpu::AllReduceOperation> kind =
        combiningKind(combiners.front());
    if (!kind || !type.isIntOrFloat() || type.getIntOrFloatBitWidth() > 32 ||
        !arith::getNeutralElement(combiners.front()))
      return failure();
    reduction.combiners.push_back(combiners.front());
    reduction.kinds.push_back(*kind);
  }
  // Lanes walk the innermost reduction loop: it must be each input's
  // contiguous dimension, or the lanes' loads would not coalesce.
  unsigned innermost = kernel.getNumLoops() - 1;
  for (OpOperand *input : kernel.getDpsInputOperands()) {
    AffineMap map = kernel.getMatchingIndexingMap(input);
    if (!map.isFunctionOfDim(innermost))
      continue;
    if (map.getNumResults() == 0 ||
        map.getResults().back() != getAffineDimExpr(innermost,
                                                    kernel.getContext()))
      return failure();
  }
  return reduction;
}

/// Each loop's extent, or its constant upper bound when it is dynamic
/// (kUnknownExtent when it has none).
SmallVector<int64_t> loopExtentBounds(linalg::LinalgOp kernel) {
  SmallVector<int64_t> extents = kernel.getStaticLoopRanges();
  SmallVector<std::pair<Value, int64_t>> shapeDims;
  for (OpOperand &operand : kernel->getOpOperands())
    for (int64_t dim = 0, rank = kernel.getRank(&operand); dim < rank; ++dim)
      shapeDims.push_back({operand.get(), dim});
  AffineMap shapesToLoops = kernel.getShapesToLoopsMap();
  for (auto [loop, extent] : llvm::enumerate(extents)) {
    if (!ShapedType::isDynamic(extent))
      continue;
    extent = kUnknownExtent;
    if (!shapesToLoops)
      continue;
    auto dim = dyn_cast<AffineDimExpr>(shapesToLoops.getResult(loop));
    if (!dim)
      continue;
    auto [value, position] = shapeDims[dim.getPosition()];
    FailureOr<int64_t> bound = ValueBoundsConstraintSet::computeConstantBound(
        presburger::BoundType::UB,
        ValueBoundsConstraintSet::Variable(value, position),
        /*stopCondition=*/nullptr, /*closedUB=*/true);
    if (succeeded(bound))
      extent = std::max<int64_t>(*bound, 1);
  }
  return extents;
}

} // namespace

int64_t momac::reductionLanes(linalg::LinalgOp kernel, int64_t threadsPerBlock,
                              bool oneBlock, bool sizedToKernel) {
  if (failed(matchSharedReduction(kernel)))
    return 1;
  // Saturating products: a bound can be large.
  uint64_t parallel = 1, reduction = 1;
  for (auto [extent, iterator] : llvm::zip(loopExtentBounds(kernel),
                                           kernel.getIteratorTypesArray())) {
    uint64_t &product =
        iterator == utils::IteratorType::parallel ? parallel : reduction;
    product = llvm::SaturatingMultiply(product, uint64_t(extent));
  }
  auto steps = [&](uint64_t lanes, uint64_t combining) {
    uint64_t work = llvm::SaturatingMultiply(parallel, lanes);
    uint64_t threads = threadsPerBlock;
    if (sizedToKernel && lanes < uint64_t(threadsPerBlock))
      threads = std::clamp<uint64_t>(work, threadsPerBlock, kResidentThreads);
    return llvm::SaturatingMultiply(
        llvm::divideCeil(work, threads),
        llvm::SaturatingAdd(llvm::divideCeil(reduction, lanes), combining));
  };
  int64_t best = 1;
  uint64_t fewest = steps(1, 0);
  if (steps(kWarpSize, kWarpCombineSteps) < fewest) {
    best = kWarpSize;
    fewest = steps(kWarpSize, kWarpCombineSteps);
  }
  if (oneBlock && threadsPerBlock > kWarpSize &&
      steps(threadsPerBlock, kBlockCombineSteps) < fewest)
    best = threadsPerBlock;
  return best;
}

/// `parallel`'s iterations shared cyclically by the threads; the last
/// loop varies fastest, so neighbouring threads touch neighbouring
/// elements.
scf::ForOp ThreadDistribution::spread(scf::ParallelOp parallel) {
  Location loc = parallel.getLoc();
  rewriter.setInsertionPoint(parallel);
  SmallVector<Value> counts;
  Value total = indexConstant(rewriter, loc, 1);
  for (auto [lb, ub, step] :
       llvm::zip(parallel.getLowerBound(), parallel.getUpperBound(),
                 parallel.getStep())) {
    Value extent = arith::SubIOp::create(rewriter, loc, ub, lb);
    counts.push_back(arith::CeilDivUIOp::create(rewriter, loc, extent, step));
    total = arith::MulIOp::create(rewriter, loc, total, counts.back());
  }
  auto loop = scf::ForOp::create(
      rewriter, loc, threadId, total,
      threadCount);
  rewriter.setInsertionPointToStart(loop.getBody());
  SmallVector<Value> ivs;
  for (auto [position, lb, step] :
       llvm::zip(delinearize(rewriter, loc, loop.getInductionVar(), counts),
                 parallel.getLowerBound(), parallel.getStep()))
    ivs.push_back(arith::AddIOp::create(
        rewriter, loc, lb,
        arith::MulIOp::create(rewriter, loc, position, step)));
  IRMapping mapping;
  mapping.map(parallel.getInductionVars(), ivs);
  for (Operation &op : parallel.getBody()->without_terminator())
    rewriter.clone(op, mapping);
  rewriter.eraseOp(parallel);
  return loop;
}

/// `op` (just lowered, at the block's uniform level) runs on thread 0.
void ThreadDistribution::onFirstThread(Operation *op) {
  Location loc = op->getLoc();
  rewriter.setInsertionPoint(op);
  Value first = arith::CmpIOp::create(rewriter, loc, arith::CmpIPredicate::eq,
                                      threadId, indexConstant(rewriter, loc, 0));
  auto guard = scf::IfOp::create(rewriter, loc, first);
  rewriter.moveOpBefore(op, guard.thenBlock()->getTerminator());
}

void ThreadDistribution::barrierAfter(Operation *op) {
  if (!oneBlock)
    return;
  rewriter.setInsertionPointAfter(op);
  gpu::BarrierOp::create(rewriter, op->getLoc());
}

/// The kernel's reduction shared by `lanes` threads per parallel
/// iteration. Every thread runs the same number of rounds (so that a
/// warp's lanes all reach its shuffles, and a block all its barriers); in
/// a round, each group of `lanes` threads takes one parallel iteration,
/// each lane combines every lanes-th reduction iteration into a partial
/// result, the partials are combined across the warp (gpu.subgroup_reduce)
/// and, for a block, across its warps through shared memory; the group's
/// first thread combines the total into the result.
LogicalResult ThreadDistribution::shareReduction(linalg::LinalgOp kernel,
                                                 int64_t lanes) {
  FailureOr<SharedReduction> reduction = matchSharedReduction(kernel);
  if (failed(reduction))
    return kernel.emitError("moma: a reduction threads cannot share");
  Location loc = kernel.getLoc();
  MLIRContext *context = kernel.getContext();
  rewriter.setInsertionPoint(kernel);
  unsigned numParallel = kernel.getNumParallelLoops();
  SmallVector<Value> parallelSizes, reductionSizes;
  Value parallelCount = indexConstant(rewriter, loc, 1);
  Value reductionCount = parallelCount;
  for (auto [loop, range] :
       llvm::enumerate(kernel.createLoopRanges(rewriter, loc))) {
    Value size = getValueOrCreateConstantIndexOp(rewriter, loc, range.size);
    bool parallel = loop < numParallel;
    (parallel ? parallelSizes : reductionSizes).push_back(size);
    Value &count = parallel ? parallelCount : reductionCount;
    count = arith::MulIOp::create(rewriter, loc, count, size);
  }
  std::optional<int64_t> threads = getConstantIntValue(threadCount);
  bool wholeBlock = oneBlock && threads && *threads == lanes;
  Value zero = indexConstant(rewriter, loc, 0);
  Value one = indexConstant(rewriter, loc, 1);
  Value lanesValue = indexConstant(rewriter, loc, lanes);
  Value lane = wholeBlock
                   ? threadId
                   : arith::RemUIOp::create(rewriter, loc, threadId,
                                            lanesValue);
  Value group = wholeBlock ? zero
                           : arith::DivUIOp::create(rewriter, loc, threadId,
                                                    lanesValue);
  Value groups =
      wholeBlock ? one
                 : arith::DivUIOp::create(rewriter, loc, threadCount,
                                          lanesValue);
  Value rounds =
      arith::CeilDivUIOp::create(rewriter, loc, parallelCount, groups);
  auto roundLoop = scf::ForOp::create(rewriter, loc, zero, rounds, one);
  rewriter.setInsertionPointToStart(roundLoop.getBody());
  Value iteration = arith::AddIOp::create(
      rewriter, loc,
      arith::MulIOp::create(rewriter, loc, roundLoop.getInductionVar(), groups),
      group);
  Value valid = arith::CmpIOp::create(rewriter, loc, arith::CmpIPredicate::ult,
                                      iteration, parallelCount);
  Value end =
      arith::SelectOp::create(rewriter, loc, valid, reductionCount, zero);
  SmallVector<Value> parallelIvs =
      delinearize(rewriter, loc, iteration, parallelSizes);

  // This lane's partial results, from the combiners' neutral elements.
  SmallVector<Value> neutral;
  for (Operation *combiner : reduction->combiners)
    neutral.push_back(arith::ConstantOp::create(
        rewriter, loc, *arith::getNeutralElement(combiner)));
  auto partialLoop = scf::ForOp::create(
      rewriter, loc, lane, end, lanesValue, neutral,
      [&](OpBuilder &b, Location loc, Value position, ValueRange partials) {
        SmallVector<Value> ivs = parallelIvs;
        llvm::append_range(ivs,
                           delinearize(b, loc, position, reductionSizes));
        scf::YieldOp::create(
            b, loc, emitKernelIteration(b, loc, kernel, ivs, partials));
      });
  auto combine = [&](OpBuilder &b, Operation *combiner, Value lhs,
                     Value rhs) -> Value {
    Operation *op = b.clone(*combiner);
    op->setOperands({lhs, rhs});
    return op->getResult(0);
  };
  SmallVector<Value> totals;
  for (auto [partial, kind] :
       llvm::zip(partialLoop.getResults(), reduction->kinds))
    totals.push_back(gpu::SubgroupReduceOp::create(rewriter, loc, partial,
                                                   kind, /*uniform=*/true));

  // The group's first thread combines the totals into the results.
  SmallVector<Value> outputIvs = parallelIvs;
  outputIvs.append(kernel.getNumReductionLoops(), zero);
  auto writeResults = [&](OpBuilder &b, Location loc, ValueRange totals) {
    for (auto [k, init] : llvm::enumerate(kernel.getDpsInitsMutable())) {
      SmallVector<Value> indices =
          elementIndices(b, loc, kernel.getMatchingIndexingMap(&init),
                         outputIvs);
      Value old = memref::LoadOp::create(b, loc, init.get(), indices);
      memref::StoreOp::create(
          b, loc, combine(b, reduction->combiners[k], old, totals[k]),
          init.get(), indices);
    }
    scf::YieldOp::create(b, loc);
  };
  auto isFirst = [&](Value id) -> Value {
    return arith::AndIOp::create(
        rewriter, loc, valid,
        arith::CmpIOp::create(rewriter, loc, arith::CmpIPredicate::eq, id,
                              zero));
  };
  if (!wholeBlock) {
    scf::IfOp::create(rewriter, loc, isFirst(lane),
                      [&](OpBuilder &b, Location loc) {
                        writeResults(b, loc, totals);
                      });
  } else {
    // A block: each warp's first lane puts the warp's total in shared
    // memory, and the block's first thread combines them.
    auto launch = kernel->getParentOfType<gpu::LaunchOp>();
    if (!launch)
      return kernel.emitError("moma: a block reduction outside a gpu.launch");
    int64_t warps = lanes / kWarpSize;
    auto workgroup =
        gpu::AddressSpaceAttr::get(context, gpu::AddressSpace::Workgroup);
    Value warpSize = indexConstant(rewriter, loc, kWarpSize);
    Value warp = arith::DivUIOp::create(rewriter, loc, threadId, warpSize);
    Value firstLane = arith::CmpIOp::create(
        rewriter, loc, arith::CmpIPredicate::eq,
        arith::RemUIOp::create(rewriter, loc, threadId, warpSize), zero);
    SmallVector<Value> shared;
    for (Value total : totals)
      shared.push_back(launch.addWorkgroupAttribution(
          MemRefType::get({warps}, total.getType(), AffineMap(), workgroup),
          loc));
    scf::IfOp::create(rewriter, loc, firstLane,
                      [&](OpBuilder &b, Location loc) {
                        for (auto [total, buffer] : llvm::zip(totals, shared))
                          memref::StoreOp::create(b, loc, total, buffer, warp);
                        scf::YieldOp::create(b, loc);
                      });
    gpu::BarrierOp::create(rewriter, loc);
    scf::IfOp::create(
        rewriter, loc, isFirst(threadId), [&](OpBuilder &b, Location loc) {
          SmallVector<Value> blockTotals;
          for (auto [buffer, combiner] :
               llvm::zip(shared, reduction->combiners)) {
            Value total = memref::LoadOp::create(b, loc, buffer, zero);
            for (int64_t w = 1; w < warps; ++w)
              total = combine(b, combiner, total,
                              memref::LoadOp::create(
                                  b, loc, buffer,
                                  ValueRange{indexConstant(b, loc, w)}));
            blockTotals.push_back(total);
          }
          writeResults(b, loc, blockTotals);
        });
    // The next round reuses the shared memory.
    gpu::BarrierOp::create(rewriter, loc);
  }
  rewriter.eraseOp(kernel);
  barrierAfter(roundLoop);
  return success();
}

/// One kernel of the tile: parallel loops over the threads, reductions
/// per thread (or shared, see shareReduction), then a barrier. A kernel
/// whose outermost loop is not parallel (a sum into a scalar) that threads
/// cannot share runs on thread 0.
LogicalResult ThreadDistribution::lowerKernel(linalg::LinalgOp kernel,
                                              int64_t lanes) {
  if (lanes > 1)
    return shareReduction(kernel, lanes);
  auto iterators = kernel.getIteratorTypesArray();
  if (iterators.empty() || iterators.front() != utils::IteratorType::parallel) {
    onFirstThread(kernel);
    barrierAfter(kernel->getParentOp());
    rewriter.setInsertionPoint(kernel);
    if (failed(linalg::linalgOpToLoops(rewriter, kernel)))
      return kernel.emitError("cannot lower to loops");
    rewriter.eraseOp(kernel);
    return success();
  }
  rewriter.setInsertionPoint(kernel);
  FailureOr<linalg::LinalgLoops> loops =
      linalg::linalgOpToParallelLoops(rewriter, kernel);
  if (failed(loops) || loops->empty())
    return kernel.emitError("cannot lower to loops");
  rewriter.eraseOp(kernel);
  auto outer = cast<scf::ParallelOp>(loops->front());
  // Parallel loops below the outermost one (under a reduction loop) run
  // sequentially in the thread that owns the iteration.
  SmallVector<scf::ParallelOp> nested;
  outer->walk([&](scf::ParallelOp inner) {
    if (inner != outer)
      nested.push_back(inner);
  });
  for (scf::ParallelOp inner : llvm::reverse(nested))
    sequentialize(rewriter, inner);
  barrierAfter(spread(outer));
  return success();
}

/// Lowers the ops of `block`, which every thread of the block runs.
LogicalResult ThreadDistribution::lowerUniformBlock(Block &block) {
  for (Operation &op : llvm::make_early_inc_range(block)) {
    if (auto copy = dyn_cast<memref::CopyOp>(op)) {
      rewriter.setInsertionPoint(copy);
      auto kernel =
          linalg::CopyOp::create(rewriter, copy.getLoc(),
                                 ValueRange{copy.getSource()},
                                 ValueRange{copy.getTarget()});
      rewriter.eraseOp(copy);
      if (failed(lowerKernel(cast<linalg::LinalgOp>(kernel.getOperation()),
                             /*lanes=*/1)))
        return failure();
      continue;
    }
    if (auto kernel = dyn_cast<linalg::LinalgOp>(op)) {
      std::optional<int64_t> threads = getConstantIntValue(threadCount);
      int64_t lanes = threads ? reductionLanes(kernel, *threads, oneBlock,
                                               /*sizedToKernel=*/false)
                              : 1;
      if (failed(lowerKernel(kernel, lanes)))
        return failure();
      continue;
    }
    if (isa<memref::StoreOp>(op)) {
      onFirstThread(&op);
      barrierAfter(op.getParentOp());
      continue;
    }
    // Control flow with uniform bounds (every thread takes the same path):
    // what it holds is lowered the same way.
    if (op.getNumRegions() > 0 && !isMemoryEffectFree(&op)) {
      if (!isa<scf::ForOp, scf::IfOp, scf::WhileOp>(op))
        return op.emitError("cannot map '")
               << op.getName() << "' inside a tile";
      for (Region &region : op.getRegions())
        for (Block &inner : region)
          if (failed(lowerUniformBlock(inner)))
            return failure();
    }
  }
  return success();
}
