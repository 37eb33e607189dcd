//===- NormsToLinalg.cpp - RMSNorm and per-head LayerNorm -----------------===//
//
// moma.rms_norm and moma.head_layer_norm (the per-head LayerNorm of q and k)
// with their gradients, which recompute the forward's row statistics with
// the same helpers.
//
//===----------------------------------------------------------------------===//

#include "compiler/Conversion/MomaToLinalg/KernelBuilder.h"
#include "compiler/Conversion/MomaToLinalg/Patterns.h"

#include "dialects/moma/IR/MomaOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"

using namespace mlir;
using namespace momac::lowering;
namespace moma = mlir::moma;

namespace {

/// Row statistics shared by the norms' forward and gradient kernels, so that
/// both compute them with the same operations in the same order.

/// r[i] = 1 / sqrt(mean_c x[i, c]^2 + eps) for x [n, d]: RMSNorm's scale.
Value rowInverseRms(KernelBuilder &kb, Value x, double eps) {
  auto type = cast<RankedTensorType>(x.getType());
  SmallVector<Value> rows = type.isDynamicDim(0)
                                ? SmallVector<Value>{kb.dim(x, 0)}
                                : SmallVector<Value>{};
  Value sumSquares =
      kb.generic({x}, kb.zeros({type.getDimSize(0)}, kb.f32, rows),
                 {kb.identity(2), kb.map(2, {0})}, {kPar, kRed},
                 [](OpBuilder &b, Location loc, ValueRange args) {
                   return SmallVector<Value>{arith::AddFOp::create(
                       b, loc, args[1],
                       arith::MulFOp::create(b, loc, args[0], args[0]))};
                 })
          .front();
  Value features = kb.f32Const(double(type.getDimSize(1)));
  Value epsilon = kb.f32Const(eps);
  return kb.elementwise(
      {sumSquares}, kb.f32, [&](OpBuilder &b, Location loc, ValueRange args) {
        Value mean = arith::DivFOp::create(b, loc, args[0], features);
        return SmallVector<Value>{math::RsqrtOp::create(
            b, loc, arith::AddFOp::create(b, loc, mean, epsilon))};
      });
}

/// The mean over each head of term(inputs) for per-head tensors: inputs are
/// [n, H, hd] or per-head statistics [n, H] (broadcast over hd); the result
/// is [n, H].
Value
headMean(KernelBuilder &kb, ValueRange inputs,
         function_ref<Value(OpBuilder &, Location, ValueRange)> term) {
  auto type = cast<RankedTensorType>(inputs.front().getType());
  SmallVector<Value> rows = type.isDynamicDim(0)
                                ? SmallVector<Value>{kb.dim(inputs.front(), 0)}
                                : SmallVector<Value>{};
  SmallVector<int64_t> statShape = {type.getDimSize(0), type.getDimSize(1)};
  SmallVector<AffineMap> maps;
  for (Value input : inputs)
    maps.push_back(cast<RankedTensorType>(input.getType()).getRank() == 3
                       ? kb.identity(3)
                       : kb.map(3, {0, 1}));
  maps.push_back(kb.map(3, {0, 1}));
  Value sum = kb.generic(inputs, kb.zeros(statShape, kb.f32, rows), maps,
                         {kPar, kPar, kRed},
                         [&](OpBuilder &b, Location loc, ValueRange args) {
                           Value t = term(b, loc, args.drop_back());
                           return SmallVector<Value>{
                               arith::AddFOp::create(b, loc, args.back(), t)};
                         })
                  .front();
  Value divisor = kb.f32Const(double(type.getDimSize(2)));
  return kb.elementwise({sum}, kb.f32,
                        [&](OpBuilder &b, Location loc, ValueRange args) {
                          return SmallVector<Value>{
                              arith::DivFOp::create(b, loc, args[0], divisor)};
                        });
}

/// Per-head mean and 1 / sqrt(variance + eps) of x [n, H, hd] over hd, as
/// the per-head LayerNorm of q and k uses them: ([n, H], [n, H]).
std::pair<Value, Value> headStatistics(KernelBuilder &kb, Value x,
                                       double eps) {
  Value mean = headMean(
      kb, {x}, [](OpBuilder &, Location, ValueRange args) { return args[0]; });
  Value variance =
      headMean(kb, {x, mean}, [](OpBuilder &b, Location loc, ValueRange args) {
        Value d = arith::SubFOp::create(b, loc, args[0], args[1]);
        return Value(arith::MulFOp::create(b, loc, d, d));
      });
  Value epsilon = kb.f32Const(eps);
  Value inverseStd = kb.elementwise(
      {variance}, kb.f32, [&](OpBuilder &b, Location loc, ValueRange args) {
        return SmallVector<Value>{math::RsqrtOp::create(
            b, loc, arith::AddFOp::create(b, loc, args[0], epsilon))};
      });
  return {mean, inverseStd};
}

/// The body acc + a * b * c (arguments a, b, c, acc).
SmallVector<Value> multiplyThreeAccumulate(OpBuilder &b, Location loc,
                                           ValueRange args) {
  Value product = arith::MulFOp::create(
      b, loc, arith::MulFOp::create(b, loc, args[0], args[1]), args[2]);
  return {arith::AddFOp::create(b, loc, args[3], product)};
}

struct LowerRMSNorm : OpRewritePattern<moma::RMSNormOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::RMSNormOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    Value x = op.getInput();
    auto type = cast<RankedTensorType>(x.getType());
    SmallVector<Value> rowsDyn = type.isDynamicDim(0)
                                     ? SmallVector<Value>{kb.dim(x, 0)}
                                     : SmallVector<Value>{};
    Value scale = rowInverseRms(kb, x, op.getEpsilon().convertToDouble());
    Value init = kb.empty(type.getShape(), kb.f32, rowsDyn);
    Value result =
        kb.generic(
              {x, scale, op.getWeight()}, init,
              {kb.identity(2), kb.map(2, {0}), kb.map(2, {1}), kb.identity(2)},
              {kPar, kPar},
              [&](OpBuilder &b, Location loc, ValueRange args) {
                Value normed = arith::MulFOp::create(b, loc, args[0], args[1]);
                return SmallVector<Value>{
                    arith::MulFOp::create(b, loc, normed, args[2])};
              })
            .front();
    rewriter.replaceOp(op, result);
    return success();
  }
};

struct LowerRMSNormGrad : OpRewritePattern<moma::RMSNormGradOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::RMSNormGradOp op,
                                PatternRewriter &rewriter) const override {
    // y = x r w with r = (mean(x^2) + eps)^-1/2:
    //   dw[c] = sum_i dy x r;  dx = r w dy - r^3 x (sum_c w dy x) / d.
    KernelBuilder kb(rewriter, op.getLoc());
    Value x = op.getInput(), w = op.getWeight(), dy = op.getOutputGrad();
    auto type = cast<RankedTensorType>(x.getType());
    SmallVector<Value> rows = rowsOf(kb, x);
    SmallVector<int64_t> rowShape = {type.getDimSize(0)};
    double features = double(type.getDimSize(1));
    Value scale = rowInverseRms(kb, x, op.getEpsilon().convertToDouble());
    Value dot =
        kb.generic(
              {w, dy, x}, kb.zeros(rowShape, kb.f32, rows),
              {kb.map(2, {1}), kb.identity(2), kb.identity(2), kb.map(2, {0})},
              {kPar, kRed},
              multiplyThreeAccumulate)
            .front();
    Value dx =
        kb.generic(
              {x, w, dy, scale, dot}, kb.empty(type.getShape(), kb.f32, rows),
              {kb.identity(2), kb.map(2, {1}), kb.identity(2), kb.map(2, {0}),
               kb.map(2, {0}), kb.identity(2)},
              {kPar, kPar},
              [&](OpBuilder &b, Location loc, ValueRange args) {
                Value r = args[3];
                Value first = arith::MulFOp::create(
                    b, loc, r, arith::MulFOp::create(b, loc, args[1], args[2]));
                Value r3 = arith::MulFOp::create(
                    b, loc, r, arith::MulFOp::create(b, loc, r, r));
                Value second = arith::DivFOp::create(
                    b, loc,
                    arith::MulFOp::create(
                        b, loc, r3,
                        arith::MulFOp::create(b, loc, args[0], args[4])),
                    arith::ConstantOp::create(b, loc,
                                              b.getF32FloatAttr(features)));
                return SmallVector<Value>{
                    arith::SubFOp::create(b, loc, first, second)};
              })
            .front();
    Value dw =
        kb.generic(
              {dy, x, scale}, kb.zeros({type.getDimSize(1)}, kb.f32),
              // Loops (c, i): the feature loop outermost, so that it becomes
              // one parallel loop around a sequential sum over the tokens.
              {kb.map(2, {1, 0}), kb.map(2, {1, 0}), kb.map(2, {1}),
               kb.map(2, {0})},
              {kPar, kRed},
              multiplyThreeAccumulate)
            .front();
    rewriter.replaceOp(op, {dx, dw});
    return success();
  }
};

struct LowerHeadLayerNorm : OpRewritePattern<moma::HeadLayerNormOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::HeadLayerNormOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    auto type = cast<RankedTensorType>(op.getInput().getType());
    auto weightType = cast<RankedTensorType>(op.getWeight().getType());
    int64_t heads = weightType.getDimSize(0);
    Value x = kb.splitHeads(op.getInput(), heads);
    SmallVector<Value> rowsDyn = type.isDynamicDim(0)
                                     ? SmallVector<Value>{kb.dim(x, 0)}
                                     : SmallVector<Value>{};
    auto [mean, scale] =
        headStatistics(kb, x, op.getEpsilon().convertToDouble());
    Value init = kb.empty(cast<RankedTensorType>(x.getType()).getShape(),
                          kb.f32, rowsDyn);
    Value normed =
        kb.generic({x, mean, scale, op.getWeight(), op.getBias()}, init,
                   {kb.identity(3), kb.map(3, {0, 1}), kb.map(3, {0, 1}),
                    kb.map(3, {1, 2}), kb.map(3, {1, 2}), kb.identity(3)},
                   {kPar, kPar, kPar},
                   [&](OpBuilder &b, Location loc, ValueRange args) {
                     Value centered =
                         arith::SubFOp::create(b, loc, args[0], args[1]);
                     Value y = arith::MulFOp::create(
                         b, loc, arith::MulFOp::create(b, loc, centered, args[2]),
                         args[3]);
                     return SmallVector<Value>{
                         arith::AddFOp::create(b, loc, y, args[4])};
                   })
            .front();
    rewriter.replaceOp(op, kb.joinHeads(normed, type));
    return success();
  }
};

struct LowerHeadLayerNormGrad : OpRewritePattern<moma::HeadLayerNormGradOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::HeadLayerNormGradOp op,
                                PatternRewriter &rewriter) const override {
    // Per head: xhat = (x - mean) r, y = xhat w + b, g = dy w:
    //   dx = r (g - mean(g) - xhat mean(g xhat)); dw = sum_i dy xhat;
    //   db = sum_i dy.
    KernelBuilder kb(rewriter, op.getLoc());
    auto type = cast<RankedTensorType>(op.getInput().getType());
    auto weightType = cast<RankedTensorType>(op.getWeight().getType());
    int64_t heads = weightType.getDimSize(0);
    Value x = kb.splitHeads(op.getInput(), heads);
    Value dy = kb.splitHeads(op.getOutputGrad(), heads);
    Value w = op.getWeight();
    SmallVector<Value> rows = rowsOf(kb, x);
    auto splitShape = cast<RankedTensorType>(x.getType()).getShape();
    auto [mean, scale] =
        headStatistics(kb, x, op.getEpsilon().convertToDouble());
    Value xhat =
        kb.generic({x, mean, scale}, kb.empty(splitShape, kb.f32, rows),
                   {kb.identity(3), kb.map(3, {0, 1}), kb.map(3, {0, 1}),
                    kb.identity(3)},
                   {kPar, kPar, kPar},
                   [](OpBuilder &b, Location loc, ValueRange args) {
                     return SmallVector<Value>{arith::MulFOp::create(
                         b, loc,
                         arith::SubFOp::create(b, loc, args[0], args[1]),
                         args[2])};
                   })
            .front();
    Value g = kb.generic({dy, w}, kb.empty(splitShape, kb.f32, rows),
                         {kb.identity(3), kb.map(3, {1, 2}), kb.identity(3)},
                         {kPar, kPar, kPar},
                         [](OpBuilder &b, Location loc, ValueRange args) {
                           return SmallVector<Value>{
                               arith::MulFOp::create(b, loc, args[0], args[1])};
                         })
                  .front();
    Value meanG = headMean(
        kb, {g}, [](OpBuilder &, Location, ValueRange args) { return args[0]; });
    Value meanGX = headMean(
        kb, {g, xhat}, [](OpBuilder &b, Location loc, ValueRange args) {
          return Value(arith::MulFOp::create(b, loc, args[0], args[1]));
        });
    Value dx =
        kb.generic({g, xhat, scale, meanG, meanGX},
                   kb.empty(splitShape, kb.f32, rows),
                   {kb.identity(3), kb.identity(3), kb.map(3, {0, 1}),
                    kb.map(3, {0, 1}), kb.map(3, {0, 1}), kb.identity(3)},
                   {kPar, kPar, kPar},
                   [](OpBuilder &b, Location loc, ValueRange args) {
                     Value centered =
                         arith::SubFOp::create(b, loc, args[0], args[3]);
                     Value projected =
                         arith::MulFOp::create(b, loc, args[1], args[4]);
                     return SmallVector<Value>{arith::MulFOp::create(
                         b, loc, args[2],
                         arith::SubFOp::create(b, loc, centered, projected))};
                   })
            .front();
    ValueRange sums = kb.generic(
        {dy, xhat},
        {kb.zeros(weightType.getShape(), kb.f32),
         kb.zeros(weightType.getShape(), kb.f32)},
        // Loops (h, c, i): parallel over the weights, summing over tokens.
        {kb.map(3, {2, 0, 1}), kb.map(3, {2, 0, 1}), kb.map(3, {0, 1}),
         kb.map(3, {0, 1})},
        {kPar, kPar, kRed}, [](OpBuilder &b, Location loc, ValueRange args) {
          Value dwTerm = arith::MulFOp::create(b, loc, args[0], args[1]);
          return SmallVector<Value>{
              arith::AddFOp::create(b, loc, args[2], dwTerm),
              arith::AddFOp::create(b, loc, args[3], args[0])};
        });
    rewriter.replaceOp(op, {kb.joinHeads(dx, type), sums[0], sums[1]});
    return success();
  }
};

} // namespace

void momac::lowering::populateNormLoweringPatterns(
    RewritePatternSet &patterns) {
  patterns.add<LowerRMSNorm, LowerRMSNormGrad, LowerHeadLayerNorm,
               LowerHeadLayerNormGrad>(patterns.getContext());
}
