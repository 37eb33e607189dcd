//===- DataMovementToLinalg.cpp - Dispatch and combine of tokens ----------===//
//
// moma.gather_tokens (dispatch: the rows of a token list) and
// moma.scatter_add_tokens (combine: weighted rows added back) with its
// gradient; padded token lists (moma.padded_modality_partition) read zeros
// and add nowhere.
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
using mlir::utils::IteratorType;
namespace moma = mlir::moma;

namespace {

struct LowerGatherTokens : OpRewritePattern<moma::GatherTokensOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::GatherTokensOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    Value source = op.getSource(), indices = op.getIndices();
    auto resultType = cast<RankedTensorType>(op.getResult().getType());
    unsigned indexRank = cast<RankedTensorType>(indices.getType()).getRank();
    unsigned rank = resultType.getRank();
    SmallVector<Value> sizes = kb.dims(indices);
    SmallVector<Value> sourceSizes = kb.dims(source);
    sizes.append(sourceSizes.begin() + 1, sourceSizes.end());
    Value init = kb.empty(resultType.getShape(), resultType.getElementType(),
                          kb.dynamicOf(resultType.getShape(), sizes));
    SmallVector<unsigned> indexDims;
    for (unsigned d = 0; d < indexRank; ++d)
      indexDims.push_back(d);
    Value result =
        kb.generic({indices}, init,
                   {kb.map(rank, indexDims), kb.identity(rank)},
                   SmallVector<IteratorType>(rank, kPar),
                   [&](OpBuilder &b, Location loc, ValueRange args) {
                     SmallVector<Value> at = {toIndex(b, loc, args[0])};
                     for (unsigned d = indexRank; d < rank; ++d)
                       at.push_back(linalg::IndexOp::create(b, loc, d));
                     return SmallVector<Value>{
                         extractRow(b, loc, source, at, op.getPadded())};
                   })
            .front();
    rewriter.replaceOp(op, result);
    return success();
  }
};

struct LowerScatterAddTokens : OpRewritePattern<moma::ScatterAddTokensOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::ScatterAddTokensOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    Value source = op.getSource(), indices = op.getIndices();
    Value weights = op.getWeights();
    bool padded = op.getPadded();
    Value destRows = kb.dim(op.getDest(), 0);
    SmallVector<Value> upper = kb.dims(indices);
    upper.push_back(kb.dim(op.getDest(), 1));
    // Sequential over the index tuples: different experts may add into the
    // same row.
    Value result =
        kb.loops(upper, {op.getDest()},
                 [&](OpBuilder &b, Location loc, ValueRange ivs,
                     ValueRange state) {
                   ValueRange tuple = ivs.drop_back();
                   Value c = ivs.back();
                   Value row = toIndex(
                       b, loc,
                       tensor::ExtractOp::create(b, loc, indices, tuple));
                   Value value = tensor::ExtractOp::create(b, loc, source, ivs);
                   if (weights)
                     value = arith::MulFOp::create(
                         b, loc, value,
                         tensor::ExtractOp::create(b, loc, weights, tuple));
                   if (padded) {
                     // Padding adds 0 to row 0 instead (x + 0 == x): no
                     // branch in the loop.
                     Value inside = arith::CmpIOp::create(
                         b, loc, arith::CmpIPredicate::ult, row, destRows);
                     row = arith::SelectOp::create(
                         b, loc, inside, row,
                         arith::ConstantIndexOp::create(b, loc, 0));
                     value = arith::SelectOp::create(
                         b, loc, inside, value,
                         arith::ConstantOp::create(b, loc,
                                                   b.getF32FloatAttr(0)));
                   }
                   Value old = tensor::ExtractOp::create(b, loc, state[0],
                                                         ValueRange{row, c});
                   return SmallVector<Value>{tensor::InsertOp::create(
                       b, loc, arith::AddFOp::create(b, loc, old, value),
                       state[0], ValueRange{row, c})};
                 })
            .front();
    rewriter.replaceOp(op, result);
    return success();
  }
};

struct LowerScatterAddTokensGrad
    : OpRewritePattern<moma::ScatterAddTokensGradOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::ScatterAddTokensGradOp op,
                                PatternRewriter &rewriter) const override {
    // result[indices[j]] += w[j] source[j]:
    //   dsource[j] = w[j] dy[indices[j]]; dw[j] = dy[indices[j]] . source[j].
    KernelBuilder kb(rewriter, op.getLoc());
    Value source = op.getSource(), indices = op.getIndices();
    Value weights = op.getWeights(), dy = op.getOutputGrad();
    auto type = cast<RankedTensorType>(source.getType());
    unsigned rank = type.getRank();
    SmallVector<unsigned> leading;
    for (unsigned d = 0; d + 1 < rank; ++d)
      leading.push_back(d);
    SmallVector<Value> inputs = {indices};
    SmallVector<AffineMap> maps = {kb.map(rank, leading)};
    if (weights) {
      inputs.push_back(weights);
      maps.push_back(kb.map(rank, leading));
    }
    maps.push_back(kb.identity(rank));
    Value init = kb.empty(type.getShape(), kb.f32,
                          kb.dynamicOf(type.getShape(), kb.dims(source)));
    Value dsource =
        kb.generic(inputs, init, maps, SmallVector<IteratorType>(rank, kPar),
                   [&](OpBuilder &b, Location loc, ValueRange args) {
                     Value row = toIndex(b, loc, args[0]);
                     Value c = linalg::IndexOp::create(b, loc, rank - 1);
                     Value value =
                         extractRow(b, loc, dy, {row, c}, op.getPadded());
                     if (weights)
                       value = arith::MulFOp::create(b, loc, value, args[1]);
                     return SmallVector<Value>{value};
                   })
            .front();
    SmallVector<Value> results = {dsource};
    if (weights) {
      auto weightType = cast<RankedTensorType>(weights.getType());
      SmallVector<IteratorType> iterators(rank, kPar);
      iterators.back() = kRed;
      Value dw =
          kb.generic(
                {source, indices},
                kb.zeros(weightType.getShape(), kb.f32,
                         kb.dynamicOf(weightType.getShape(), kb.dims(weights))),
                {kb.identity(rank), kb.map(rank, leading),
                 kb.map(rank, leading)},
                iterators,
                [&](OpBuilder &b, Location loc, ValueRange args) {
                  Value row = toIndex(b, loc, args[1]);
                  Value c = linalg::IndexOp::create(b, loc, rank - 1);
                  Value upstream =
                      extractRow(b, loc, dy, {row, c}, op.getPadded());
                  Value product =
                      arith::MulFOp::create(b, loc, upstream, args[0]);
                  return SmallVector<Value>{
                      arith::AddFOp::create(b, loc, args[2], product)};
                })
              .front();
      results.push_back(dw);
    }
    rewriter.replaceOp(op, results);
    return success();
  }
};

} // namespace

void momac::lowering::populateDataMovementLoweringPatterns(
    RewritePatternSet &patterns) {
  patterns
      .add<LowerGatherTokens, LowerScatterAddTokens, LowerScatterAddTokensGrad>(
          patterns.getContext());
}
