//===- TileAndFuse.cpp - Row-tiled kernels with their producers fused -----===//
//
// See Passes.td. Tiling and fusion are upstream's (TilingInterface and
// scf::tileConsumerAndFuseProducersUsingSCF); this pass decides which
// kernels are tiled, along which loop, and which producers join them.
//
//===----------------------------------------------------------------------===//

#include "compiler/Codegen/Passes.h"

#include "mlir/Dialect/Linalg/IR/LinalgInterfaces.h"
#include "mlir/Dialect/SCF/Transforms/TileUsingInterface.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Interfaces/TilingInterface.h"

namespace momac {
#define GEN_PASS_DEF_TILEANDFUSE
#include "compiler/Codegen/Passes.h.inc"
} // namespace momac

using namespace mlir;

namespace {

/// A kernel of the function's top level that is not a GEMM: contractions
/// stay whole, for the targets' libraries.
bool isFusableKernel(Operation *op, func::FuncOp func) {
  auto linalgOp = dyn_cast_or_null<linalg::LinalgOp>(op);
  return linalgOp && op->getParentOp() == func.getOperation() &&
         linalgOp.hasPureTensorSemantics() &&
         !linalg::isaContractionOpInterface(linalgOp);
}

/// True when `op` is worth tiling as a consumer: its outermost loop is
/// parallel and has more than one iteration. A fill is only worth fusing
/// into the kernel that accumulates into it.
bool isRowTileable(linalg::LinalgOp op) {
  if (isa<linalg::FillOp>(op) || op.getNumLoops() == 0 ||
      op.getIteratorTypesArray().front() != utils::IteratorType::parallel)
    return false;
  SmallVector<int64_t> ranges = op.getStaticLoopRanges();
  return ranges.front() != 1;
}

/// Points the tensor.dim ops that read `op`'s results at its destinations
/// instead, which have the same shapes: dynamic sizes are read everywhere,
/// and such a reader would otherwise keep a fused kernel alive outside its
/// loop.
void dropShapeReaders(RewriterBase &rewriter, DestinationStyleOpInterface op) {
  for (OpResult result : op->getResults()) {
    Value init = op.getDpsInitOperand(result.getResultNumber())->get();
    for (OpOperand &use : llvm::make_early_inc_range(result.getUses()))
      if (isa<tensor::DimOp>(use.getOwner()))
        rewriter.modifyOpInPlace(use.getOwner(), [&] { use.set(init); });
  }
}

/// The fusable kernels `consumer` reads, directly or through other fusable
/// kernels.
DenseSet<Operation *> producerChain(Operation *consumer, func::FuncOp func) {
  DenseSet<Operation *> chain;
  SmallVector<Operation *> worklist = {consumer};
  while (!worklist.empty()) {
    Operation *op = worklist.pop_back_val();
    for (Value operand : op->getOperands()) {
      Operation *producer = operand.getDefiningOp();
      if (isFusableKernel(producer, func) && chain.insert(producer).second)
        worklist.push_back(producer);
    }
  }
  return chain;
}

struct TileAndFusePass : momac::impl::TileAndFuseBase<TileAndFusePass> {
  using TileAndFuseBase::TileAndFuseBase;

  void runOnOperation() override {
    func::FuncOp func = getOperation();
    if (func.isExternal())
      return;
    if (tileRows <= 0) {
      func.emitError() << "moma-tile-and-fuse: tile-rows must be positive, got "
                       << tileRows;
      return signalPassFailure();
    }
    SmallVector<linalg::LinalgOp> consumers;
    for (Operation &op : func.getBody().front())
      if (isFusableKernel(&op, func) &&
          isRowTileable(cast<linalg::LinalgOp>(op)))
        consumers.push_back(cast<linalg::LinalgOp>(op));

    IRRewriter rewriter(&getContext());
    // Consumers from the last to the first: a producer fused into a later
    // kernel's loop is erased before it would be tiled on its own.
    DenseSet<Operation *> erased;
    for (linalg::LinalgOp consumer : llvm::reverse(consumers)) {
      if (erased.contains(consumer))
        continue;
      if (failed(tileWithProducers(rewriter, func, consumer, erased)))
        return signalPassFailure();
    }
  }

  LogicalResult tileWithProducers(IRRewriter &rewriter, func::FuncOp func,
                                  linalg::LinalgOp consumer,
                                  DenseSet<Operation *> &erased) {
    // Leading parallel loops shorter than a tile (the experts of a stacked
    // [E, k, f] kernel, the heads of [H, n, n]) are split one iteration per
    // tile, down to the first loop long enough to cut into tiles of rows.
    SmallVector<OpFoldResult> tileSizes(consumer.getNumLoops(),
                                        rewriter.getIndexAttr(0));
    SmallVector<int64_t> extents = consumer.getStaticLoopRanges();
    auto iterators = consumer.getIteratorTypesArray();
    for (unsigned loop = 0; loop < extents.size() &&
                            iterators[loop] == utils::IteratorType::parallel;
         ++loop) {
      bool short_ = !ShapedType::isDynamic(extents[loop]) &&
                    extents[loop] < tileRows;
      tileSizes[loop] = rewriter.getIndexAttr(short_ ? 1 : tileRows);
      if (!short_)
        break;
    }
    scf::SCFTilingOptions tiling;
    tiling.setLoopType(scf::SCFTilingOptions::LoopType::ForallOp)
        .setTileSizes(tileSizes);
    scf::SCFTileAndFuseOptions options;
    options.setTilingOptions(tiling);
    Operation *consumerOp = consumer.getOperation();
    Block *body = &func.getBody().front();
    // The kernels this loop may take in: the consumer's producer chain.
    // While fusion runs, their original ops still read the producers; they
    // are not readers "elsewhere".
    DenseSet<Operation *> chain = producerChain(consumerOp, func);
    options.setFusionControlFn(
        [&](tensor::ExtractSliceOp slice, OpResult producer,
            bool isDestination)
            -> std::optional<scf::SCFTileAndFuseOptions::ControlFnResult> {
          if (!isFusableKernel(producer.getOwner(), func))
            return std::nullopt;
          Operation *loop = slice->getParentOfType<scf::ForallOp>();
          bool readAfter = false;
          for (Operation *user : producer.getUsers()) {
            // A tensor.dim reads only the shape, which the producer's
            // destination has too (see dropShapeReaders).
            if (user == consumerOp || chain.contains(user) ||
                isa<tensor::DimOp>(user) || (loop && loop->isAncestor(user)))
              continue;
            Operation *top = body->findAncestorOpInBlock(*user);
            // The loop stands where the consumer stood: a reader before it
            // cannot see a value the loop yields.
            if (!top || top->isBeforeInBlock(consumerOp))
              return std::nullopt;
            readAfter = true;
          }
          // A destination is written in place: fusing a producer read
          // elsewhere into it would overwrite that value.
          if (isDestination && readAfter)
            return std::nullopt;
          // Readers after the loop read the value it yields, so that the
          // producer is computed once.
          return scf::SCFTileAndFuseOptions::ControlFnResult{readAfter};
        });
    rewriter.setInsertionPoint(consumer);
    FailureOr<scf::SCFTileAndFuseResult> result =
        scf::tileConsumerAndFuseProducersUsingSCF(
            rewriter, cast<TilingInterface>(consumerOp), options);
    if (failed(result))
      return consumer.emitError("moma-tile-and-fuse: tiling failed");
    Operation *loop = result->loops.front().getOperation();
    // Only readers after the loop can take its values; a chain kernel that
    // was not fused keeps reading the original producer.
    for (auto [original, replacement] : result->replacements)
      rewriter.replaceUsesWithIf(original, replacement, [&](OpOperand &use) {
        Operation *top = body->findAncestorOpInBlock(*use.getOwner());
        return top && (top == consumerOp || loop->isBeforeInBlock(top));
      });
    // Fusion leaves the slices it replaced in the loop; with them gone, the
    // originals of the fused producers have no readers left.
    SmallVector<tensor::ExtractSliceOp> slices;
    loop->walk([&](tensor::ExtractSliceOp slice) { slices.push_back(slice); });
    for (tensor::ExtractSliceOp slice : slices)
      if (slice->use_empty())
        rewriter.eraseOp(slice);
    // The consumer and the fused producers, once nothing reads them.
    SetVector<Operation *> candidates;
    candidates.insert(consumerOp);
    candidates.insert(result->fusedProducers.begin(),
                      result->fusedProducers.end());
    for (Operation *op : candidates)
      dropShapeReaders(rewriter, cast<DestinationStyleOpInterface>(op));
    for (bool changed = true; changed;) {
      changed = false;
      for (Operation *op : candidates)
        if (!erased.contains(op) && op->use_empty()) {
          erased.insert(op);
          rewriter.eraseOp(op);
          changed = true;
        }
    }
    return success();
  }
};

} // namespace
