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
#include "compiler/Target/CUDA/ThreadDistribution.h"

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

/// True when `alloc`, in `loop` inside a tile, is used only within the
/// iteration that allocates it: neither it nor a view of it reaches a
/// terminator that hands values to the next iteration or out of the loop.
/// (Attention's score tiles, allocated per key block.) One slot of the
/// block's scratch then serves every iteration.
bool staysInIteration(memref::AllocOp alloc, Operation *loop) {
  SmallVector<Value> worklist = {alloc.getResult()};
  while (!worklist.empty()) {
    Value value = worklist.pop_back_val();
    for (Operation *user : value.getUsers()) {
      if (!loop->isProperAncestor(user) ||
          user->hasTrait<OpTrait::IsTerminator>())
        return false;
      if (isa<ViewLikeOpInterface, memref::CastOp>(user))
        llvm::append_range(worklist, user->getResults());
    }
  }
  return true;
}

struct MapTilesToGpuPass
    : momac::impl::MapTilesToGpuBase<MapTilesToGpuPass> {
  using MapTilesToGpuBase::MapTilesToGpuBase;

  void runOnOperation() override {
    if (threadsPerBlock <= 0 || threadsPerBlock % 32 != 0) {
      getOperation().emitError("moma-map-tiles-to-gpu: threads-per-block must "
                               "be a positive multiple of 32, got ")
          << int64_t(threadsPerBlock);
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
  /// A tile temporary: its bytes are `staticBytes` times the product of
  /// `hostSizes` (sizes known on the host before the tile, when they have
  /// no constant bound).
  struct Temporary {
    Value alloc;
    int64_t staticBytes;
    SmallVector<Value> hostSizes;
    Value offset; // in the block's slice, set when the launch is built
  };

  LogicalResult mapTile(scf::ForallOp tile) {
    Location loc = tile.getLoc();
    if (tile.getRank() > 3)
      return tile.emitError("moma-map-tiles-to-gpu: a tile loop of rank ")
             << tile.getRank() << " (at most 3 map to a grid)";
    if (tile.getNumResults() != 0)
      return tile.emitError(
          "moma-map-tiles-to-gpu: expects a tile loop on buffers");

    // Scratch: each temporary at an offset of a block's slice, sized by
    // its constant bound (a tile has at most `step` rows) or, failing
    // that, by sizes the host knows before the tile (a token count).
    SmallVector<Temporary> temporaries;
    WalkResult walk = tile.getBody()->walk([&](memref::AllocOp alloc) {
      for (Operation *parent = alloc->getParentOp(); parent != tile;
           parent = parent->getParentOp())
        if (isa<LoopLikeOpInterface>(parent)) {
          if (!staysInIteration(alloc, parent)) {
            alloc.emitError("moma-map-tiles-to-gpu: a temporary allocated "
                            "in a loop inside a tile outlives its iteration");
            return WalkResult::interrupt();
          }
          break;
        }
      MemRefType type = alloc.getType();
      if (!type.getLayout().isIdentity() || type.getMemorySpace()) {
        alloc.emitError("moma-map-tiles-to-gpu: a temporary with a layout "
                        "or memory space");
        return WalkResult::interrupt();
      }
      Temporary temporary{alloc.getResult(),
                          int64_t(llvm::divideCeil(
                              type.getElementTypeBitWidth(), 8)),
                          {},
                          Value()};
      unsigned dynamicIndex = 0;
      for (int64_t size : type.getShape()) {
        if (!ShapedType::isDynamic(size)) {
          temporary.staticBytes *= size;
          continue;
        }
        Value dynamic = alloc.getDynamicSizes()[dynamicIndex++];
        FailureOr<int64_t> bound =
            ValueBoundsConstraintSet::computeConstantBound(
                presburger::BoundType::UB,
                ValueBoundsConstraintSet::Variable(dynamic),
                /*stopCondition=*/nullptr, /*closedUB=*/true);
        if (succeeded(bound)) {
          temporary.staticBytes *= std::max<int64_t>(*bound, 0);
          continue;
        }
        Operation *def = dynamic.getDefiningOp();
        bool onHost = def ? !tile->isAncestor(def)
                          : !tile->isAncestor(
                                cast<BlockArgument>(dynamic).getOwner()
                                    ->getParentOp());
        if (!onHost) {
          InFlightDiagnostic diag = alloc.emitError(
              "moma-map-tiles-to-gpu: a temporary whose size has no "
              "constant upper bound and is computed in the tile: ");
          diag << type;
          return WalkResult::interrupt();
        }
        temporary.hostSizes.push_back(dynamic);
      }
      temporaries.push_back(std::move(temporary));
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
    // Each temporary's offset in a block's slice, and the slice's size,
    // on the host.
    Value bytesPerBlock = indexConstant(rewriter, loc, 0);
    for (Temporary &temporary : temporaries) {
      temporary.offset = bytesPerBlock;
      Value bytes = indexConstant(rewriter, loc, temporary.staticBytes);
      for (Value size : temporary.hostSizes)
        bytes = arith::MulIOp::create(rewriter, loc, bytes, size);
      Value aligned = arith::MulIOp::create(
          rewriter, loc,
          arith::CeilDivUIOp::create(
              rewriter, loc, bytes,
              indexConstant(rewriter, loc, kScratchAlignment)),
          indexConstant(rewriter, loc, kScratchAlignment));
      bytesPerBlock =
          arith::AddIOp::create(rewriter, loc, bytesPerBlock, aligned);
    }
    Value scratch;
    if (!temporaries.empty()) {
      Value blocks = arith::MulIOp::create(
          rewriter, loc, arith::MulIOp::create(rewriter, loc, grid[0], grid[1]),
          grid[2]);
      Value bytes = arith::MulIOp::create(rewriter, loc, blocks, bytesPerBlock);
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
      Value sliceStart =
          arith::MulIOp::create(rewriter, loc, linear, bytesPerBlock);
      for (const Temporary &temporary : temporaries) {
        auto alloc = cast<memref::AllocOp>(
            mapping.lookup(temporary.alloc).getDefiningOp());
        rewriter.setInsertionPoint(alloc);
        Value shift =
            arith::AddIOp::create(rewriter, loc, sliceStart, temporary.offset);
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

    // The thread count is a constant of the kernel (not a value captured
    // from the host), so that the index arithmetic of the spread loops
    // divides by a constant.
    rewriter.setInsertionPointToStart(&body);
    Value threadsInKernel = indexConstant(rewriter, loc, threadsPerBlock);
    momac::ThreadDistribution distribution{rewriter, launch.getThreadIds().x,
                                           threadsInKernel,
                                           /*oneBlock=*/true};
    return distribution.lowerUniformBlock(body);
  }
};

} // namespace
