//===- FoldIndexKernelExtracts.cpp - Index-only elements, where read ------===//
//
// See Passes.td.
//
//===----------------------------------------------------------------------===//

#include "compiler/Codegen/GreedyRewrite.h"
#include "compiler/Codegen/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Arith/Utils/Utils.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

namespace momac {
#define GEN_PASS_DEF_FOLDINDEXKERNELEXTRACTS
#include "compiler/Codegen/Passes.h.inc"
} // namespace momac

using namespace mlir;

namespace {

/// True when `generic` computes each element from its index alone: no
/// inputs, identity output maps, a body of pure region-free ops on scalars
/// that reads neither its output arguments nor any tensor.
bool computesFromIndexAlone(linalg::GenericOp generic) {
  if (generic.getNumDpsInputs() != 0 || !generic.hasPureTensorSemantics() ||
      !llvm::all_of(generic.getIndexingMapsArray(),
                    [](AffineMap map) { return map.isIdentity(); }))
    return false;
  Block &body = generic.getRegion().front();
  if (llvm::any_of(body.getArguments(),
                   [](BlockArgument arg) { return !arg.use_empty(); }))
    return false;
  for (Operation &op : body.without_terminator()) {
    if (op.getNumRegions() != 0 || !isPure(&op))
      return false;
    auto isTensor = [](Type type) { return isa<TensorType>(type); };
    if (llvm::any_of(op.getOperandTypes(), isTensor) ||
        llvm::any_of(op.getResultTypes(), isTensor))
      return false;
  }
  return true;
}

struct FoldExtractOfIndexKernel : OpRewritePattern<tensor::ExtractOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(tensor::ExtractOp extract,
                                PatternRewriter &rewriter) const override {
    Location loc = extract.getLoc();
    Value source = extract.getTensor();
    auto slice = source.getDefiningOp<tensor::ExtractSliceOp>();
    if (slice) {
      if (slice.getSourceType().getRank() != slice.getResultType().getRank())
        return failure();
      source = slice.getSource();
    }
    auto generic = source.getDefiningOp<linalg::GenericOp>();
    if (!generic || !computesFromIndexAlone(generic))
      return failure();
    rewriter.setInsertionPoint(extract);
    SmallVector<Value> indices(extract.getIndices());
    // Through the slice: its element i is element offset + i * stride of
    // its source.
    if (slice)
      for (auto [i, offset, stride] :
           llvm::zip(indices, slice.getMixedOffsets(),
                     slice.getMixedStrides())) {
        Value scaled = arith::MulIOp::create(
            rewriter, loc, i,
            getValueOrCreateConstantIndexOp(rewriter, loc, stride));
        i = arith::AddIOp::create(
            rewriter, loc, scaled,
            getValueOrCreateConstantIndexOp(rewriter, loc, offset));
      }
    unsigned result = cast<OpResult>(source).getResultNumber();
    IRMapping mapping;
    Block &body = generic.getRegion().front();
    for (Operation &op : body.without_terminator()) {
      if (auto index = dyn_cast<linalg::IndexOp>(op)) {
        mapping.map(index.getResult(), indices[index.getDim()]);
        continue;
      }
      rewriter.clone(op, mapping);
    }
    Value element = mapping.lookupOrDefault(
        body.getTerminator()->getOperand(result));
    rewriter.replaceOp(extract, element);
    return success();
  }
};

struct FoldIndexKernelExtractsPass
    : momac::impl::FoldIndexKernelExtractsBase<FoldIndexKernelExtractsPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<FoldExtractOfIndexKernel>(&getContext());
    if (failed(momac::applyPatternsOrReport(getOperation(), std::move(patterns),
                                            getArgument())))
      signalPassFailure();
  }
};

} // namespace
