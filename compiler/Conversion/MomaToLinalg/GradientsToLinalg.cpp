//===- GradientsToLinalg.cpp - moma gradient ops to structured code -------===//
//
// The backward kernels of the ops in MomaVJP.cpp. Each comment states the
// derivative it computes; the end-to-end tests compare every parameter's
// gradient with PyTorch autograd of the reference model.
//
//===----------------------------------------------------------------------===//

#include "compiler/Conversion/MomaToLinalg/KernelBuilder.h"

#include "dialects/moma/IR/MomaOps.h"

using namespace mlir;
using namespace momac::lowering;
namespace moma = mlir::moma;

namespace {

SmallVector<Value> rowsOf(KernelBuilder &kb, Value x) {
  auto type = cast<RankedTensorType>(x.getType());
  return type.isDynamicDim(0) ? SmallVector<Value>{kb.dim(x, 0)}
                              : SmallVector<Value>{};
}

/// The body acc + a * b * c (arguments a, b, c, acc).
SmallVector<Value> multiplyThreeAccumulate(OpBuilder &b, Location loc,
                                           ValueRange args) {
  Value product = arith::MulFOp::create(
      b, loc, arith::MulFOp::create(b, loc, args[0], args[1]), args[2]);
  return {arith::AddFOp::create(b, loc, args[3], product)};
}

/// The derivative of silu at z: s (1 + z (1 - s)) with s = sigmoid(z).
Value siluDerivative(OpBuilder &b, Location loc, Value z) {
  Value s = sigmoid(b, loc, z);
  Value one = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(1.0f));
  return arith::MulFOp::create(
      b, loc, s,
      arith::AddFOp::create(
          b, loc, one,
          arith::MulFOp::create(b, loc, z,
                                arith::SubFOp::create(b, loc, one, s))));
}

/// The gradient of z through s = sigmoid(z), given ds and s: ds s (1 - s).
Value sigmoidBackward(KernelBuilder &kb, Value scoresGrad, Value scores) {
  return kb.elementwise(
      {scoresGrad, scores}, kb.f32,
      [](OpBuilder &b, Location loc, ValueRange args) {
        Value one = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(1.0f));
        Value slope = arith::MulFOp::create(
            b, loc, args[1], arith::SubFOp::create(b, loc, one, args[1]));
        return SmallVector<Value>{arith::MulFOp::create(b, loc, args[0], slope)};
      });
}

Value addTensors(KernelBuilder &kb, Value x, Value y) {
  return kb.elementwise({x, y}, kb.f32,
                        [](OpBuilder &b, Location loc, ValueRange args) {
                          return SmallVector<Value>{
                              arith::AddFOp::create(b, loc, args[0], args[1])};
                        });
}

struct LowerMatmul : OpRewritePattern<moma::MatmulOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::MatmulOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    rewriter.replaceOp(op,
                       kb.matmul(op.getLhs(), op.getRhs(), op.getTransposeLhs(),
                                 op.getTransposeRhs()));
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

struct LowerSwiGLUGrad : OpRewritePattern<moma::SwiGLUGradOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::SwiGLUGradOp op,
                                PatternRewriter &rewriter) const override {
    // h1 = x w1^T, h3 = x w3^T, g = silu(h1) h3, y = g w2^T:
    //   dg = dy w2, dw2 = dy^T g, dh1 = dg h3 silu'(h1), dh3 = dg silu(h1),
    //   dx = dh1 w1 + dh3 w3, dw1 = dh1^T x, dw3 = dh3^T x,
    //   silu'(z) = s (1 + z (1 - s)) with s = sigmoid(z).
    KernelBuilder kb(rewriter, op.getLoc());
    Value x = op.getInput(), dy = op.getOutputGrad();
    Value h1 = kb.contractTransposed(x, op.getW1());
    Value h3 = kb.contractTransposed(x, op.getW3());
    Value g = kb.elementwise(
        {h1, h3}, kb.f32, [](OpBuilder &b, Location loc, ValueRange args) {
          return SmallVector<Value>{
              arith::MulFOp::create(b, loc, silu(b, loc, args[0]), args[1])};
        });
    Value dg = kb.matmul(dy, op.getW2(), false, false);
    Value dw2 = kb.matmul(dy, g, true, false);
    Value dh1 = kb.elementwise(
        {dg, h1, h3}, kb.f32, [](OpBuilder &b, Location loc, ValueRange args) {
          return SmallVector<Value>{arith::MulFOp::create(
              b, loc, arith::MulFOp::create(b, loc, args[0], args[2]),
              siluDerivative(b, loc, args[1]))};
        });
    Value dh3 = kb.elementwise(
        {dg, h1}, kb.f32, [](OpBuilder &b, Location loc, ValueRange args) {
          return SmallVector<Value>{
              arith::MulFOp::create(b, loc, args[0], silu(b, loc, args[1]))};
        });
    Value dx = addTensors(kb, kb.matmul(dh1, op.getW1(), false, false),
                          kb.matmul(dh3, op.getW3(), false, false));
    Value dw1 = kb.matmul(dh1, x, true, false);
    Value dw3 = kb.matmul(dh3, x, true, false);
    rewriter.replaceOp(op, {dx, dw1, dw3, dw2});
    return success();
  }
};

struct LowerRouterGrad : OpRewritePattern<moma::RouterGradOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::RouterGradOp op,
                                PatternRewriter &rewriter) const override {
    // s = sigmoid(x w^T): dz = ds s (1 - s), dx = dz w, dw = dz^T x.
    KernelBuilder kb(rewriter, op.getLoc());
    Value dz = sigmoidBackward(kb, op.getScoresGrad(), op.getScores());
    rewriter.replaceOp(op,
                       {kb.matmulInF32(dz, op.getWeight(), false, false),
                        kb.matmulInF32(dz, op.getInput(), true, false)});
    return success();
  }
};

struct LowerGateGrad : OpRewritePattern<moma::GateGradOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::GateGradOp op,
                                PatternRewriter &rewriter) const override {
    // gates[e, j] = scores[indices[e, j], e] (or [indices[j], 0]): the
    // scores' gradient is the gates' at the chosen entries.
    KernelBuilder kb(rewriter, op.getLoc());
    Value scores = op.getScores(), indices = op.getIndices();
    Value dg = op.getGatesGrad();
    auto type = cast<RankedTensorType>(scores.getType());
    bool perExpert = cast<RankedTensorType>(indices.getType()).getRank() == 2;
    Value init = kb.zeros(type.getShape(), kb.f32,
                          kb.dynamicOf(type.getShape(), kb.dims(scores)));
    Value result =
        kb.loops(kb.dims(indices), {init},
                 [&](OpBuilder &b, Location loc, ValueRange ivs,
                     ValueRange state) {
                   Value row = toIndex(
                       b, loc, tensor::ExtractOp::create(b, loc, indices, ivs));
                   Value column =
                       perExpert ? ivs[0]
                                 : arith::ConstantIndexOp::create(b, loc, 0);
                   Value old = tensor::ExtractOp::create(
                       b, loc, state[0], ValueRange{row, column});
                   Value add = tensor::ExtractOp::create(b, loc, dg, ivs);
                   return SmallVector<Value>{tensor::InsertOp::create(
                       b, loc, arith::AddFOp::create(b, loc, old, add),
                       state[0], ValueRange{row, column})};
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

struct LowerCrossEntropyGrad : OpRewritePattern<moma::CrossEntropyGradOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::CrossEntropyGradOp op,
                                PatternRewriter &rewriter) const override {
    // loss = mean(lse - l[y]) + z mean(lse^2):
    //   dl = dloss / N (p - onehot(y) + 2 z lse p), p = exp(l - lse).
    KernelBuilder kb(rewriter, op.getLoc());
    Value logits = op.getLogits(), targets = op.getTargets();
    auto type = cast<RankedTensorType>(logits.getType());
    SmallVector<Value> rows = rowsOf(kb, logits);
    Value lse = rowLogSumExp(kb, logits);
    Value count = arith::UIToFPOp::create(
        rewriter, op.getLoc(), kb.f32,
        arith::IndexCastUIOp::create(rewriter, op.getLoc(),
                                     rewriter.getI64Type(), kb.dim(logits, 0)));
    Value upstream = tensor::ExtractOp::create(rewriter, op.getLoc(),
                                               op.getLossGrad(), ValueRange{});
    Value factor =
        arith::DivFOp::create(rewriter, op.getLoc(), upstream, count);
    Value twoZ = kb.f32Const(2.0 * op.getZLoss().convertToDouble());
    Value result =
        kb.generic(
              {logits, lse, targets}, kb.empty(type.getShape(), kb.f32, rows),
              {kb.identity(2), kb.map(2, {0}), kb.map(2, {0}), kb.identity(2)},
              {kPar, kPar},
              [&](OpBuilder &b, Location loc, ValueRange args) {
                Value p = math::ExpOp::create(
                    b, loc, arith::SubFOp::create(b, loc, args[0], args[1]));
                Value v = linalg::IndexOp::create(b, loc, 1);
                Value isTarget =
                    arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, v,
                                          toIndex(b, loc, args[2]));
                Value onehot =
                    arith::UIToFPOp::create(b, loc, b.getF32Type(), isTarget);
                Value zTerm = arith::MulFOp::create(
                    b, loc, arith::MulFOp::create(b, loc, twoZ, args[1]), p);
                Value g = arith::AddFOp::create(
                    b, loc, arith::SubFOp::create(b, loc, p, onehot), zTerm);
                return SmallVector<Value>{
                    arith::MulFOp::create(b, loc, g, factor)};
              })
            .front();
    rewriter.replaceOp(op, result);
    return success();
  }
};

struct LowerGlobalNorm : OpRewritePattern<moma::GlobalNormOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::GlobalNormOp op,
                                PatternRewriter &rewriter) const override {
    // sqrt(sum of squares), accumulated in double across all tensors. A
    // matrix is first summed per row, in parallel over the rows, so that the
    // pass over every gradient uses all threads; the row sums then add up.
    KernelBuilder kb(rewriter, op.getLoc());
    MLIRContext *context = rewriter.getContext();
    Type f64 = rewriter.getF64Type();
    auto sumOfSquares = [](OpBuilder &b, Location loc, ValueRange args) {
      Value x = args[0];
      if (x.getType() != args[1].getType())
        x = arith::ExtFOp::create(b, loc, args[1].getType(), x);
      return SmallVector<Value>{arith::AddFOp::create(
          b, loc, args[1], arith::MulFOp::create(b, loc, x, x))};
    };
    auto add = [](OpBuilder &b, Location loc, ValueRange args) {
      return SmallVector<Value>{
          arith::AddFOp::create(b, loc, args[1], args[0])};
    };
    Value total = kb.zeros({}, f64);
    for (Value tensor : op.getTensors()) {
      auto type = cast<RankedTensorType>(tensor.getType());
      unsigned rank = type.getRank();
      AffineMap toScalar = AffineMap::get(rank, 0, {}, context);
      if (rank < 2) {
        total = kb.generic({tensor}, total, {kb.identity(rank), toScalar},
                           SmallVector<IteratorType>(rank, kRed), sumOfSquares)
                    .front();
        continue;
      }
      SmallVector<unsigned> rowDims;
      for (unsigned d = 0; d + 1 < rank; ++d)
        rowDims.push_back(d);
      SmallVector<IteratorType> iterators(rank - 1, kPar);
      iterators.push_back(kRed);
      Value rowSums =
          kb.generic({tensor}, kb.zeros(type.getShape().drop_back(), f64),
                     {kb.identity(rank), kb.map(rank, rowDims)}, iterators,
                     sumOfSquares)
              .front();
      total = kb.generic({rowSums}, total,
                         {kb.identity(rank - 1),
                          AffineMap::get(rank - 1, 0, {}, context)},
                         SmallVector<IteratorType>(rank - 1, kRed), add)
                  .front();
    }
    Value sum =
        tensor::ExtractOp::create(rewriter, op.getLoc(), total, ValueRange{});
    Value norm = arith::TruncFOp::create(
        rewriter, op.getLoc(), kb.f32,
        math::SqrtOp::create(rewriter, op.getLoc(), sum));
    rewriter.replaceOp(
        op, tensor::FromElementsOp::create(rewriter, op.getLoc(),
                                           RankedTensorType::get({}, kb.f32),
                                           ValueRange{norm}));
    return success();
  }
};

struct LowerAdamWUpdate : OpRewritePattern<moma::AdamWUpdateOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::AdamWUpdateOp op,
                                PatternRewriter &rewriter) const override {
    // One element-wise kernel, so the update may overwrite its inputs.
    KernelBuilder kb(rewriter, op.getLoc());
    Location loc = op.getLoc();
    auto scheduleAt = [&](int64_t i) {
      return tensor::ExtractOp::create(rewriter, loc, op.getSchedule(),
                                       ValueRange{kb.index(i)})
          .getResult();
    };
    Value lr = scheduleAt(0), correction1 = scheduleAt(1),
          correction2 = scheduleAt(2);
    Value clip =
        tensor::ExtractOp::create(rewriter, loc, op.getClip(), ValueRange{});
    double beta1 = op.getBeta1().convertToDouble();
    double beta2 = op.getBeta2().convertToDouble();
    double eps = op.getEps().convertToDouble();
    double decay = op.getWeightDecay().convertToDouble();
    auto type = cast<RankedTensorType>(op.getParam().getType());
    unsigned rank = type.getRank();
    ValueRange updated = kb.generic(
        {op.getParam(), op.getGrad(), op.getFirstMoment(),
         op.getSecondMoment()},
        {kb.empty(type.getShape(), kb.f32), kb.empty(type.getShape(), kb.f32),
         kb.empty(type.getShape(), kb.f32)},
        SmallVector<AffineMap>(7, kb.identity(rank)),
        SmallVector<IteratorType>(rank, kPar),
        [&](OpBuilder &b, Location at, ValueRange args) {
          auto constant = [&](double value) {
            return arith::ConstantOp::create(b, at, b.getF32FloatAttr(value))
                .getResult();
          };
          auto mul = [&](Value x, Value y) {
            return arith::MulFOp::create(b, at, x, y).getResult();
          };
          auto add = [&](Value x, Value y) {
            return arith::AddFOp::create(b, at, x, y).getResult();
          };
          Value p = args[0], m = args[2], v = args[3];
          Value g = mul(args[1], clip);
          Value m2 = add(mul(constant(beta1), m), mul(constant(1 - beta1), g));
          Value v2 =
              add(mul(constant(beta2), v), mul(constant(1 - beta2), mul(g, g)));
          Value mHat = arith::DivFOp::create(b, at, m2, correction1);
          Value vHat = arith::DivFOp::create(b, at, v2, correction2);
          Value denominator =
              add(math::SqrtOp::create(b, at, vHat), constant(eps));
          Value direction =
              add(mul(constant(decay), p),
                  arith::DivFOp::create(b, at, mHat, denominator));
          Value p2 = arith::SubFOp::create(b, at, p, mul(lr, direction));
          // A NaN clip factor (a non-finite gradient norm) updates nothing.
          Value skip = arith::CmpFOp::create(b, at, arith::CmpFPredicate::UNO,
                                             clip, clip);
          auto keep = [&](Value old, Value updated) {
            return arith::SelectOp::create(b, at, skip, old, updated)
                .getResult();
          };
          return SmallVector<Value>{keep(p, p2), keep(m, m2), keep(v, v2)};
        });
    rewriter.replaceOp(op, updated);
    return success();
  }
};

} // namespace

struct LowerAuxRouterGrad : OpRewritePattern<moma::AuxRouterGradOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::AuxRouterGradOp op,
                                PatternRewriter &rewriter) const override {
    // a = x w1^T, h = silu(a), p = sigmoid(h w2^T):
    //   dz = dp p (1 - p), dw2 = dz^T h, da = (dz w2) silu'(a), dw1 = da^T x.
    // Router weights: f32 GEMMs whatever the model's GEMM precision.
    KernelBuilder kb(rewriter, op.getLoc());
    Value x = op.getInput();
    Value a = kb.matmulInF32(x, op.getW1(), false, true);
    Value h = kb.elementwise({a}, kb.f32,
                             [](OpBuilder &b, Location loc, ValueRange args) {
                               return SmallVector<Value>{silu(b, loc, args[0])};
                             });
    Value dz = sigmoidBackward(kb, op.getScoresGrad(), op.getScores());
    Value dw2 = kb.matmulInF32(dz, h, true, false);
    Value da = kb.elementwise(
        {kb.matmulInF32(dz, op.getW2(), false, false), a}, kb.f32,
        [](OpBuilder &b, Location loc, ValueRange args) {
          return SmallVector<Value>{arith::MulFOp::create(
              b, loc, args[0], siluDerivative(b, loc, args[1]))};
        });
    Value dw1 = kb.matmulInF32(da, x, true, false);
    rewriter.replaceOp(op, {dw1, dw2});
    return success();
  }
};

struct LowerAuxRouterLossGrad : OpRewritePattern<moma::AuxRouterLossGradOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::AuxRouterLossGradOp op,
                                PatternRewriter &rewriter) const override {
    // torch's BCELoss: (p - y) / max(p (1 - p), 1e-12), over the mean's count.
    KernelBuilder kb(rewriter, op.getLoc());
    Location loc = op.getLoc();
    Value predictions = op.getPredictions();
    Value chosen = choiceMask(kb, predictions, op.getIndices());
    // With padding rows, the count is read in the kernel: on a GPU it stays
    // in device memory, and a scalar computed from it on the host side would
    // have to come back first.
    Value valid = op.getValid();
    Value scale;
    if (!valid)
      scale = arith::DivFOp::create(
          rewriter, loc,
          tensor::ExtractOp::create(rewriter, loc, op.getLossGrad(),
                                    ValueRange{}),
          decisionCount(kb, predictions));
    Value grad = kb.elementwise(
        {predictions, chosen}, kb.f32,
        [&](OpBuilder &b, Location at, ValueRange args) {
          Value rowScale = scale;
          if (valid)
            rowScale = arith::DivFOp::create(
                b, at,
                tensor::ExtractOp::create(b, at, op.getLossGrad(),
                                          ValueRange{}),
                decisionCount(b, at, predictions, valid));
          Value one = arith::ConstantOp::create(b, at, b.getF32FloatAttr(1.0f));
          Value variance = arith::MulFOp::create(
              b, at, args[0], arith::SubFOp::create(b, at, one, args[0]));
          Value floor = arith::MaximumFOp::create(
              b, at, variance,
              arith::ConstantOp::create(b, at, b.getF32FloatAttr(1e-12f)));
          Value residual = arith::SubFOp::create(b, at, args[0], args[1]);
          Value grad = arith::MulFOp::create(
              b, at, arith::DivFOp::create(b, at, residual, floor), rowScale);
          // Padding rows (count 0 included, where rowScale is not finite)
          // get 0.
          if (valid)
            grad = arith::SelectOp::create(
                b, at,
                isRowValid(b, at, linalg::IndexOp::create(b, at, 0), valid),
                grad, arith::ConstantOp::create(b, at, b.getF32FloatAttr(0)));
          return SmallVector<Value>{grad};
        });
    rewriter.replaceOp(op, grad);
    return success();
  }
};

void momac::lowering::populateGradientLoweringPatterns(
    RewritePatternSet &patterns) {
  patterns.add<LowerMatmul, LowerRMSNormGrad, LowerHeadLayerNormGrad,
               LowerSwiGLUGrad, LowerRouterGrad,
               LowerGateGrad, LowerScatterAddTokensGrad, LowerModMergeGrad,
               LowerCrossEntropyGrad, LowerGlobalNorm, LowerAdamWUpdate,
               LowerAuxRouterGrad, LowerAuxRouterLossGrad>(
      patterns.getContext());
}

int64_t momac::lowering::maxSequencesOf(Operation *module) {
  int64_t sequences = 0;
  module->walk([&](moma::TokenPositionsOp op) {
    auto type = cast<RankedTensorType>(op.getPositions().getType());
    if (type.isDynamicDim(0)) {
      sequences = -1; // unbounded: every attention counts its own
      return WalkResult::interrupt();
    }
    sequences = std::max<int64_t>(
        sequences, llvm::divideCeil(type.getDimSize(0), op.getSeqLen()));
    return WalkResult::advance();
  });
  return std::max<int64_t>(sequences, 0);
}

int64_t momac::lowering::maxSequenceRowsOf(Operation *module) {
  int64_t rows = 0;
  module->walk([&](moma::TokenPositionsOp op) {
    rows = std::max<int64_t>(rows, op.getSeqLen());
  });
  return rows;
}
