//===- MixtureOfDepthsToLinalg.cpp - MoD selection and merge --------------===//
//
// A Mixture-of-Depths layer's top-k selection of the tokens its block sees
// (MODEL_SPEC section 5), the merge of the block's outputs back into the
// residual stream, and the merge's gradient.
//
//===----------------------------------------------------------------------===//

#include "compiler/Conversion/MomaToLinalg/KernelBuilder.h"
#include "compiler/Conversion/MomaToLinalg/Patterns.h"
#include "compiler/Conversion/MomaToLinalg/RoutingHelpers.h"

#include "dialects/moma/IR/MomaOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

using namespace mlir;
using namespace momac::lowering;
namespace moma = mlir::moma;

namespace {

struct LowerModSelect : OpRewritePattern<moma::ModSelectOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::ModSelectOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    Value scores = op.getScores();
    Value n = kb.dim(scores, 0);
    Value k = ceilFraction(kb, n, op.getCapacity().convertToDouble(), 1.0);
    // The top k by score, then those k in ascending token order: their
    // keys' index bits, selected again.
    Value top = selectSmallestKeys(kb, selectionKeys(kb, scores), k);
    Value zero = kb.index(0);
    Value tokenKeys = kb.generic(
        {}, {kb.empty({1, ShapedType::kDynamic}, kb.b.getI64Type(), {k})},
        {kb.identity(2)}, {kPar, kPar},
        [&](OpBuilder &b, Location loc, ValueRange) {
          Value slot = linalg::IndexOp::create(b, loc, 1);
          Value token = tokenOfKey(b, loc,
                                   tensor::ExtractOp::create(
                                       b, loc, top, ValueRange{zero, slot}));
          return SmallVector<Value>{
              arith::IndexCastUIOp::create(b, loc, b.getI64Type(), token)};
        }).front();
    Value ascending = selectSmallestKeys(kb, tokenKeys, k);
    auto type = cast<RankedTensorType>(op.getIndices().getType());
    // Owned: a ValueRange{k} kept in a variable would point into a
    // temporary initializer list.
    SmallVector<Value> kDyn;
    if (type.isDynamicDim(0))
      kDyn.push_back(k);
    SmallVector<Value> selected = kb.generic(
        {}, {kb.empty(type.getShape(), kb.i32, kDyn),
             kb.empty(type.getShape(), kb.f32, kDyn)},
        {kb.identity(1), kb.identity(1)}, {kPar},
        [&](OpBuilder &b, Location loc, ValueRange) {
          Value slot = linalg::IndexOp::create(b, loc, 0);
          Value token = arith::IndexCastUIOp::create(
              b, loc, b.getIndexType(),
              tensor::ExtractOp::create(b, loc, ascending,
                                        ValueRange{zero, slot}));
          Value gate =
              tensor::ExtractOp::create(b, loc, scores, ValueRange{token, zero});
          return SmallVector<Value>{toI32(b, loc, token), gate};
        });
    rewriter.replaceOp(op, selected);
    return success();
  }
};

struct LowerModMerge : OpRewritePattern<moma::ModMergeOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::ModMergeOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    Value x = op.getInput(), block = op.getBlock();
    Value indices = op.getIndices(), gates = op.getGates();
    // out[i] = x[i] + r * (block[j] - x[i]) for i = indices[j]; rows are
    // distinct, so the order of j does not matter.
    Value merged =
        kb.loops({kb.dim(indices, 0), kb.dim(x, 1)}, {x},
                 [&](OpBuilder &b, Location loc, ValueRange ivs,
                     ValueRange state) {
                   Value j = ivs[0], c = ivs[1];
                   Value row = toIndex(b, loc,
                                       tensor::ExtractOp::create(
                                           b, loc, indices, ValueRange{j}));
                   Value gate =
                       tensor::ExtractOp::create(b, loc, gates, ValueRange{j});
                   Value old =
                       tensor::ExtractOp::create(b, loc, x, ValueRange{row, c});
                   Value fresh = tensor::ExtractOp::create(b, loc, block,
                                                           ValueRange{j, c});
                   Value delta = arith::MulFOp::create(
                       b, loc, gate, arith::SubFOp::create(b, loc, fresh, old));
                   Value value = arith::AddFOp::create(b, loc, old, delta);
                   return SmallVector<Value>{tensor::InsertOp::create(
                       b, loc, value, state[0], ValueRange{row, c})};
                 })
            .front();
    rewriter.replaceOp(op, merged);
    return success();
  }
};

struct LowerModMergeGrad : OpRewritePattern<moma::ModMergeGradOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::ModMergeGradOp op,
                                PatternRewriter &rewriter) const override {
    // out[i] = x[i] + g (y[j] - x[i]) for i = indices[j], else x[i]:
    //   dx = dy, scaled by (1 - g) on selected rows; dy_block[j] = g dy[i];
    //   dg[j] = dy[i] . (y[j] - x[i]).
    KernelBuilder kb(rewriter, op.getLoc());
    Value x = op.getInput(), block = op.getBlock();
    Value indices = op.getIndices(), gates = op.getGates();
    Value dy = op.getOutputGrad();
    auto blockType = cast<RankedTensorType>(block.getType());
    SmallVector<Value> blockRows = rowsOf(kb, block);
    Value dblock = kb.generic({indices, gates},
                              kb.empty(blockType.getShape(), kb.f32, blockRows),
                              {kb.map(2, {0}), kb.map(2, {0}), kb.identity(2)},
                              {kPar, kPar},
                              [&](OpBuilder &b, Location loc, ValueRange args) {
                                Value row = toIndex(b, loc, args[0]);
                                Value c = linalg::IndexOp::create(b, loc, 1);
                                Value upstream = tensor::ExtractOp::create(
                                    b, loc, dy, ValueRange{row, c});
                                return SmallVector<Value>{arith::MulFOp::create(
                                    b, loc, args[1], upstream)};
                              })
                       .front();
    Value dgates =
        kb.generic(
              {block, indices},
              kb.zeros({blockType.getDimSize(0)}, kb.f32, blockRows),
              {kb.identity(2), kb.map(2, {0}), kb.map(2, {0})}, {kPar, kRed},
              [&](OpBuilder &b, Location loc, ValueRange args) {
                Value row = toIndex(b, loc, args[1]);
                Value c = linalg::IndexOp::create(b, loc, 1);
                Value upstream =
                    tensor::ExtractOp::create(b, loc, dy, ValueRange{row, c});
                Value old =
                    tensor::ExtractOp::create(b, loc, x, ValueRange{row, c});
                Value delta = arith::SubFOp::create(b, loc, args[0], old);
                return SmallVector<Value>{arith::AddFOp::create(
                    b, loc, args[2],
                    arith::MulFOp::create(b, loc, upstream, delta))};
              })
            .front();
    Value one = kb.f32Const(1.0);
    Value dx = kb.loops({kb.dim(indices, 0), kb.dim(x, 1)}, {dy},
                        [&](OpBuilder &b, Location loc, ValueRange ivs,
                            ValueRange state) {
                          Value row =
                              toIndex(b, loc,
                                      tensor::ExtractOp::create(
                                          b, loc, indices, ValueRange{ivs[0]}));
                          Value gate = tensor::ExtractOp::create(
                              b, loc, gates, ValueRange{ivs[0]});
                          Value upstream = tensor::ExtractOp::create(
                              b, loc, dy, ValueRange{row, ivs[1]});
                          Value kept = arith::MulFOp::create(
                              b, loc, upstream,
                              arith::SubFOp::create(b, loc, one, gate));
                          return SmallVector<Value>{tensor::InsertOp::create(
                              b, loc, kept, state[0], ValueRange{row, ivs[1]})};
                        })
                   .front();
    rewriter.replaceOp(op, {dx, dblock, dgates});
    return success();
  }
};

} // namespace

void momac::lowering::populateMixtureOfDepthsLoweringPatterns(
    RewritePatternSet &patterns) {
  patterns.add<LowerModSelect, LowerModMerge, LowerModMergeGrad>(
      patterns.getContext());
}
