//===- MapTilesToGpu.cpp - Row tiles as thread blocks ---------------------===//
//
// See Passes.td. The shared pipeline's tiles are the unit of work a block
// runs; the kernels fused into a tile are spread over the block's threads.
// This is the mapping that keeps every kernel of the CPU target (one OpenMP
// iteration per tile, sequential loops inside) valid on the GPU: the tile
// loop is the same, only who runs the iterations inside a tile changes.
//
//===----------------------------------------------------------------------===//

#include "compiler/Target/CUDA/Passes.h"

#include "mlir/Dialect/Affine/IR/AffineOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Linalg/Transforms/Transforms.h"
#include "mlir/Dialect/SCF/Utils/Utils.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "mlir/Interfaces/ValueBoundsOpInterface.h"

namespace momac {
#define GEN_PASS_DEF_MAPTILESTOGPU
#include "compiler/Target/CUDA/Passes.h.inc"
} // namespace momac

using namespace mlir;

namespace {

constexpr int64_t kScratchAlignment = 64;

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

/// Runs one tile's worth of work on a block: `threadId` of `threadsPerBlock`.
struct BlockDistribution {
  IRRewriter &rewriter;
  Value threadId;
  int64_t threadsPerBlock;

  /// `parallel`'s iterations shared cyclically by the threads; the last
  /// loop varies fastest, so neighbouring threads touch neighbouring
  /// elements.
  scf::ForOp spread(scf::ParallelOp parallel) {
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
        indexConstant(rewriter, loc, threadsPerBlock));
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
  void onFirstThread(Operation *op) {
    Location loc = op->getLoc();
    rewriter.setInsertionPoint(op);
    Value first = arith::CmpIOp::create(rewriter, loc, arith::CmpIPredicate::eq,
                                        threadId, indexConstant(rewriter, loc, 0));
    auto guard = scf::IfOp::create(rewriter, loc, first);
    rewriter.moveOpBefore(op, guard.thenBlock()->getTerminator());
  }

  void barrierAfter(Operation *op) {
    rewriter.setInsertionPointAfter(op);
    gpu::BarrierOp::create(rewriter, op->getLoc());
  }

  /// One kernel of the tile: parallel loops over the threads, reductions
  /// per thread, then a barrier. A kernel whose outermost loop is not
  /// parallel (a sum into a scalar) runs on thread 0.
  LogicalResult lowerKernel(linalg::LinalgOp kernel) {
    auto iterators = kernel.getIteratorTypesArray();
    if (iterators.empty() || iterators.front() != utils::IteratorType::parallel) {
      onFirstThread(kernel);
      barrierAfter(kernel->getParentOp());
      rewriter.setInsertionPoint(kernel);
      if (failed(linalg::linalgOpToLoops(rewriter, kernel)))
        return kernel.emitError("moma-map-tiles-to-gpu: cannot lower to loops");
      rewriter.eraseOp(kernel);
      return success();
    }
    rewriter.setInsertionPoint(kernel);
    FailureOr<linalg::LinalgLoops> loops =
        linalg::linalgOpToParallelLoops(rewriter, kernel);
    if (failed(loops) || loops->empty())
      return kernel.emitError("moma-map-tiles-to-gpu: cannot lower to loops");
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
  LogicalResult lowerUniformBlock(Block &block) {
    for (Operation &op : llvm::make_early_inc_range(block)) {
      if (auto copy = dyn_cast<memref::CopyOp>(op)) {
        rewriter.setInsertionPoint(copy);
        auto kernel = linalg::CopyOp::create(rewriter, copy.getLoc(),
                                             copy.getSource(), copy.getTarget());
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
          return op.emitError("moma-map-tiles-to-gpu: cannot map '")
                 << op.getName() << "' inside a tile";
        for (Region &region : op.getRegions())
          for (Block &inner : region)
            if (failed(lowerUniformBlock(inner)))
              return failure();
      }
    }
    return success();
  }
};

struct MapTilesToGpuPass
    : momac::impl::MapTilesToGpuBase<MapTilesToGpuPass> {
  using MapTilesToGpuBase::MapTilesToGpuBase;

  void runOnOperation() override {
    if (threadsPerBlock <= 0 || threadsPerBlock % 32 != 0) {
      getOperation().emitError("moma-map-tiles-to-gpu: threads-per-block must "
                               "be a positive multiple of 32, got ")
          << threadsPerBlock;
      return signalPassFailure();
    }
    SmallVector<scf::ForallOp> tiles;
    getOperation().walk([&](scf::ForallOp tile) {
      if (!tile->getParentOfType<scf::ForallOp>() &&
          !tile->getParentOfType<gpu::LaunchOp>())
        tiles.push_back(tile);
    });
    for (scf::ForallOp tile : tiles)
      if (failed(mapTile(tile)))
        return signalPassFailure();
  }

  /// The tile's temporaries with the bytes each needs at most.
  struct Temporary {
    Value alloc;
    int64_t offset;
  };

  LogicalResult mapTile(scf::ForallOp tile) {
    Location loc = tile.getLoc();
    if (tile.getRank() > 3)
      return tile.emitError("moma-map-tiles-to-gpu: a tile loop of rank ")
             << tile.getRank() << " (at most 3 map to a grid)";
    if (tile.getNumResults() != 0)
      return tile.emitError(
          "moma-map-tiles-to-gpu: expects a tile loop on buffers");

    // Scratch: each temporary at a fixed offset of a block's slice.
    SmallVector<Temporary> temporaries;
    int64_t bytesPerBlock = 0;
    WalkResult walk = tile.getBody()->walk([&](memref::AllocOp alloc) {
      for (Operation *parent = alloc->getParentOp(); parent != tile;
           parent = parent->getParentOp())
        if (isa<LoopLikeOpInterface>(parent)) {
          alloc.emitError("moma-map-tiles-to-gpu: a temporary allocated in "
                          "a loop inside a tile");
          return WalkResult::interrupt();
        }
      MemRefType type = alloc.getType();
      if (!type.getLayout().isIdentity() || type.getMemorySpace()) {
        alloc.emitError("moma-map-tiles-to-gpu: a temporary with a layout "
                        "or memory space");
        return WalkResult::interrupt();
      }
      int64_t elements = 1;
      unsigned dynamicIndex = 0;
      for (int64_t size : type.getShape()) {
        if (ShapedType::isDynamic(size)) {
          Value dynamic = alloc.getDynamicSizes()[dynamicIndex++];
          FailureOr<int64_t> bound =
              ValueBoundsConstraintSet::computeConstantBound(
                  presburger::BoundType::UB,
                  ValueBoundsConstraintSet::Variable(dynamic),
                  /*stopCondition=*/nullptr, /*closedUB=*/true);
          if (failed(bound)) {
            alloc.emitError("moma-map-tiles-to-gpu: a temporary whose size "
                            "has no constant upper bound");
            return WalkResult::interrupt();
          }
          size = std::max<int64_t>(*bound, 0);
        }
        elements *= size;
      }
      int64_t bytes = elements *
                      llvm::divideCeil(type.getElementTypeBitWidth(), 8);
      temporaries.push_back({alloc.getResult(), bytesPerBlock});
      bytesPerBlock += llvm::alignTo(bytes, kScratchAlignment);
      return WalkResult::advance();
    });
    if (walk.wasInterrupted())
      return failure();

    IRRewriter rewriter(tile.getContext());
    rewriter.setInsertionPoint(tile);
    // The grid: one block per iteration, the innermost loop on x.
    SmallVector<Value> counts;
    for (auto [lb, ub, step] :
         llvm::zip(tile.getLowerBound(rewriter), tile.getUpperBound(rewriter),
                   tile.getStep(rewriter))) {
      Value extent = arith::SubIOp::create(rewriter, loc, ub, lb);
      counts.push_back(arith::CeilDivUIOp::create(rewriter, loc, extent, step));
    }
    Value one = indexConstant(rewriter, loc, 1);
    SmallVector<Value, 3> grid(3, one);
    for (unsigned i = 0; i < counts.size(); ++i)
      grid[i] = counts[counts.size() - 1 - i];
    Value scratch;
    if (bytesPerBlock > 0) {
      Value blocks = arith::MulIOp::create(
          rewriter, loc, arith::MulIOp::create(rewriter, loc, grid[0], grid[1]),
          grid[2]);
      Value bytes = arith::MulIOp::create(
          rewriter, loc, blocks, indexConstant(rewriter, loc, bytesPerBlock));
      scratch = memref::AllocOp::create(
          rewriter, loc,
          MemRefType::get({ShapedType::kDynamic}, rewriter.getI8Type()),
          ValueRange{bytes}, rewriter.getI64IntegerAttr(kScratchAlignment));
    }
    Value threads = indexConstant(rewriter, loc, threadsPerBlock);
    auto launch = gpu::LaunchOp::create(rewriter, loc, grid[0], grid[1],
                                        grid[2], threads, one, one);
    Block &body = launch.getBody().front();
    rewriter.setInsertionPointToStart(&body);
    gpu::KernelDim3 blockIds = launch.getBlockIds();
    SmallVector<Value, 3> blockId = {blockIds.x, blockIds.y, blockIds.z};
    IRMapping mapping;
    SmallVector<Value> lbs = tile.getLowerBound(rewriter),
                       steps = tile.getStep(rewriter);
    for (unsigned i = 0; i < counts.size(); ++i) {
      Value id = blockId[counts.size() - 1 - i];
      mapping.map(tile.getInductionVars()[i],
                  arith::AddIOp::create(
                      rewriter, loc, lbs[i],
                      arith::MulIOp::create(rewriter, loc, id, steps[i])));
    }
    for (Operation &op : tile.getBody()->without_terminator())
      rewriter.clone(op, mapping);
    gpu::TerminatorOp::create(rewriter, loc);

    // Temporaries become views of this block's slice of the scratch buffer;
    // the slice outlives the tile, so their deallocations go.
    if (scratch) {
      rewriter.setInsertionPointToStart(&body);
      gpu::KernelDim3 gridSize = launch.getGridSize();
      Value linear = arith::AddIOp::create(
          rewriter, loc, blockIds.x,
          arith::MulIOp::create(
              rewriter, loc, gridSize.x,
              arith::AddIOp::create(
                  rewriter, loc, blockIds.y,
                  arith::MulIOp::create(rewriter, loc, gridSize.y,
                                        blockIds.z))));
      Value sliceStart = arith::MulIOp::create(
          rewriter, loc, linear, indexConstant(rewriter, loc, bytesPerBlock));
      for (const Temporary &temporary : temporaries) {
        auto alloc = cast<memref::AllocOp>(
            mapping.lookup(temporary.alloc).getDefiningOp());
        rewriter.setInsertionPoint(alloc);
        Value shift = arith::AddIOp::create(
            rewriter, loc, sliceStart,
            indexConstant(rewriter, loc, temporary.offset));
        Value view = memref::ViewOp::create(rewriter, alloc.getLoc(),
                                            alloc.getType(), scratch, shift,
                                            alloc.getDynamicSizes());
        for (Operation *user : llvm::make_early_inc_range(alloc->getUsers()))
          if (isa<memref::DeallocOp>(user))
            rewriter.eraseOp(user);
        rewriter.replaceOp(alloc, view);
      }
      rewriter.setInsertionPointAfter(launch);
      memref::DeallocOp::create(rewriter, loc, scratch);
    }
    rewriter.eraseOp(tile);

    BlockDistribution distribution{rewriter, launch.getThreadIds().x,
                                   threadsPerBlock};
    return distribution.lowerUniformBlock(body);
  }
};

} // namespace
