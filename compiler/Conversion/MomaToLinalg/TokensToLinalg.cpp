//===- TokensToLinalg.cpp - Token layout, embedding, positions ------------===//
//
// Where the tokens of a batch and their positions come from: the split of
// each sequence into inputs and targets, every token's position and
// sequence id, the embedding lookup and the rotary position embedding (the
// gradient's inverse rotation included: moma.rope with `inverse`).
//
//===----------------------------------------------------------------------===//

#include "compiler/Conversion/MomaToLinalg/KernelBuilder.h"
#include "compiler/Conversion/MomaToLinalg/Patterns.h"

#include "dialects/moma/IR/MomaOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

#include <cmath>

using namespace mlir;
using namespace momac::lowering;
namespace moma = mlir::moma;

namespace {

struct LowerShiftTokens : OpRewritePattern<moma::ShiftTokensOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::ShiftTokensOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    Value tokens = op.getTokens();
    auto type = cast<RankedTensorType>(op.getInputs().getType());
    Value width = kb.dim(tokens, 1);
    Value seqLen =
        arith::SubIOp::create(rewriter, op.getLoc(), width, kb.index(1));
    SmallVector<Value> dynamic =
        type.isDynamicDim(0)
            ? SmallVector<Value>{arith::MulIOp::create(
                  rewriter, op.getLoc(), kb.dim(tokens, 0), seqLen)}
            : SmallVector<Value>{};
    Value inputs = kb.empty(type.getShape(), kb.i32, dynamic);
    Value targets = kb.empty(type.getShape(), kb.i32, dynamic);
    ValueRange results = kb.generic(
        {}, {inputs, targets}, {kb.identity(1), kb.identity(1)}, {kPar},
        [&](OpBuilder &b, Location loc, ValueRange) {
          Value n = linalg::IndexOp::create(b, loc, 0);
          Value row = arith::DivUIOp::create(b, loc, n, seqLen);
          Value col = arith::RemUIOp::create(b, loc, n, seqLen);
          Value next = arith::AddIOp::create(
              b, loc, col, arith::ConstantIndexOp::create(b, loc, 1));
          return SmallVector<Value>{
              tensor::ExtractOp::create(b, loc, tokens, ValueRange{row, col}),
              tensor::ExtractOp::create(b, loc, tokens, ValueRange{row, next})};
        });
    rewriter.replaceOp(op, results);
    return success();
  }
};

struct LowerTokenPositions : OpRewritePattern<moma::TokenPositionsOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::TokenPositionsOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    auto type = cast<RankedTensorType>(op.getPositions().getType());
    if (type.isDynamicDim(0))
      return rewriter.notifyMatchFailure(op, "needs a static token count");
    Value positions = kb.empty(type.getShape(), kb.i32);
    Value sequences = kb.empty(type.getShape(), kb.i32);
    int64_t seqLen = op.getSeqLen();
    ValueRange results =
        kb.generic({}, {positions, sequences}, {kb.identity(1), kb.identity(1)},
                   {kPar}, [&](OpBuilder &b, Location loc, ValueRange) {
                     Value n = linalg::IndexOp::create(b, loc, 0);
                     Value s = arith::ConstantIndexOp::create(b, loc, seqLen);
                     return SmallVector<Value>{
                         toI32(b, loc, arith::RemUIOp::create(b, loc, n, s)),
                         toI32(b, loc, arith::DivUIOp::create(b, loc, n, s))};
                   });
    rewriter.replaceOp(op, results);
    return success();
  }
};

struct LowerEmbed : OpRewritePattern<moma::EmbedOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::EmbedOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    auto type = cast<RankedTensorType>(op.getResult().getType());
    Value ids = op.getTokenIds();
    Value init = kb.empty(type.getShape(), kb.f32,
                          type.isDynamicDim(0) ? ValueRange{kb.dim(ids, 0)}
                                               : ValueRange{});
    Value table = op.getTable();
    Value result =
        kb.generic({ids}, init, {kb.map(2, {0}), kb.identity(2)}, {kPar, kPar},
                   [&](OpBuilder &b, Location loc, ValueRange args) {
                     Value row = toIndex(b, loc, args[0]);
                     Value col = linalg::IndexOp::create(b, loc, 1);
                     return SmallVector<Value>{tensor::ExtractOp::create(
                         b, loc, table, ValueRange{row, col})};
                   })
            .front();
    rewriter.replaceOp(op, result);
    return success();
  }
};

struct LowerRope : OpRewritePattern<moma::RopeOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::RopeOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    auto type = cast<RankedTensorType>(op.getInput().getType());
    int64_t heads = op.getNumHeads();
    int64_t headDim = type.getDimSize(1) / heads;
    int64_t half = headDim / 2;
    double logTheta = std::log(op.getTheta().convertToDouble());
    // The inverse rotation (the gradient) turns by -phi.
    double direction = op.getInverse() ? -1.0 : 1.0;
    Value x = kb.splitHeads(op.getInput(), heads);
    SmallVector<Value> rowDyn =
        type.isDynamicDim(0) ? SmallVector<Value>{kb.dim(x, 0)}
                             : SmallVector<Value>{};
    // cos(phi) and sin(phi) per token and frequency, shared by the heads:
    // phi = s * theta^(-2 p / hd) for pair p, in double.
    SmallVector<int64_t> tableShape = {type.getDimSize(0), half};
    ValueRange tables = kb.generic(
        {op.getPositions()},
        {kb.empty(tableShape, kb.f32, rowDyn),
         kb.empty(tableShape, kb.f32, rowDyn)},
        {kb.map(2, {0}), kb.identity(2), kb.identity(2)}, {kPar, kPar},
        [&](OpBuilder &b, Location loc, ValueRange args) {
          Value pair = linalg::IndexOp::create(b, loc, 1);
          Value pairF = arith::UIToFPOp::create(
              b, loc, b.getF64Type(),
              arith::IndexCastUIOp::create(b, loc, b.getI64Type(), pair));
          Value exponent = arith::MulFOp::create(
              b, loc, pairF,
              arith::ConstantOp::create(
                  b, loc, b.getF64FloatAttr(-2.0 * logTheta / double(headDim))));
          Value frequency = math::ExpOp::create(b, loc, exponent);
          Value position =
              arith::SIToFPOp::create(b, loc, b.getF64Type(), args[0]);
          Value phi = arith::MulFOp::create(
              b, loc, arith::MulFOp::create(b, loc, position, frequency),
              arith::ConstantOp::create(b, loc, b.getF64FloatAttr(direction)));
          return SmallVector<Value>{
              arith::TruncFOp::create(b, loc, b.getF32Type(),
                                      math::CosOp::create(b, loc, phi)),
              arith::TruncFOp::create(b, loc, b.getF32Type(),
                                      math::SinOp::create(b, loc, phi))};
        });
    Value cosines = tables[0], sines = tables[1];
    Value init = kb.empty(cast<RankedTensorType>(x.getType()).getShape(),
                          kb.f32, rowDyn);
    Value rotated =
        kb.generic(
              {x}, init, {kb.identity(3), kb.identity(3)}, {kPar, kPar, kPar},
              [&](OpBuilder &b, Location loc, ValueRange args) {
                Value i = linalg::IndexOp::create(b, loc, 0);
                Value h = linalg::IndexOp::create(b, loc, 1);
                Value j = linalg::IndexOp::create(b, loc, 2);
                Value halfIndex = arith::ConstantIndexOp::create(b, loc, half);
                Value firstHalf = arith::CmpIOp::create(
                    b, loc, arith::CmpIPredicate::ult, j, halfIndex);
                Value partner = arith::SelectOp::create(
                    b, loc, firstHalf,
                    arith::AddIOp::create(b, loc, j, halfIndex),
                    arith::SubIOp::create(b, loc, j, halfIndex));
                Value partnerValue = tensor::ExtractOp::create(
                    b, loc, x, ValueRange{i, h, partner});
                // rotate_half([x1, x2]) = [-x2, x1].
                Value rotatedValue = arith::SelectOp::create(
                    b, loc, firstHalf,
                    arith::NegFOp::create(b, loc, partnerValue), partnerValue);
                Value pair = arith::RemUIOp::create(b, loc, j, halfIndex);
                Value cosine = tensor::ExtractOp::create(b, loc, cosines,
                                                         ValueRange{i, pair});
                Value sine =
                    tensor::ExtractOp::create(b, loc, sines, ValueRange{i, pair});
                Value result = arith::AddFOp::create(
                    b, loc, arith::MulFOp::create(b, loc, args[0], cosine),
                    arith::MulFOp::create(b, loc, rotatedValue, sine));
                return SmallVector<Value>{result};
              })
            .front();
    rewriter.replaceOp(op, kb.joinHeads(rotated, type));
    return success();
  }
};

} // namespace

void momac::lowering::populateTokenLoweringPatterns(
    RewritePatternSet &patterns) {
  patterns.add<LowerShiftTokens, LowerTokenPositions, LowerEmbed, LowerRope>(
      patterns.getContext());
}
