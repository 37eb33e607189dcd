//===- ThreadDistribution.cpp - Kernels spread over GPU threads -----------===//

#include "compiler/Target/CUDA/ThreadDistribution.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/Linalg/Transforms/Transforms.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/Utils/Utils.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

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

} // namespace

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
  SmallVector<Value> ivs(counts.size());
  Value rest = loop.getInductionVar();
  for (int64_t i = counts.size() - 1; i >= 0; --i) {
    Value position = rest;
    if (i > 0) {
      position = arith::RemUIOp::create(rewriter, loc, rest, counts[i]);
      rest = arith::DivUIOp::create(rewriter, loc, rest, counts[i]);
    }
    ivs[i] = arith::AddIOp::create(
        rewriter, loc, parallel.getLowerBound()[i],
        arith::MulIOp::create(rewriter, loc, position,
                              parallel.getStep()[i]));
  }
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

/// One kernel of the tile: parallel loops over the threads, reductions
/// per thread, then a barrier. A kernel whose outermost loop is not
/// parallel (a sum into a scalar) runs on thread 0.
LogicalResult ThreadDistribution::lowerKernel(linalg::LinalgOp kernel) {
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
      if (failed(lowerKernel(cast<linalg::LinalgOp>(kernel.getOperation()))))
        return failure();
      continue;
    }
    if (auto kernel = dyn_cast<linalg::LinalgOp>(op)) {
      if (failed(lowerKernel(kernel)))
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
