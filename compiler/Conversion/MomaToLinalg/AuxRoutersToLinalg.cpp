//===- AuxRoutersToLinalg.cpp - Auxiliary routers and causal routing ------===//
//
// The auxiliary routers of causal inference (MODEL_SPEC section 6): their
// scores and gradient, routing by them (a token goes where its score is
// above a half), their BCE objective against the batch router's choices and
// its gradient, and the statistics momarun reports (confusion counts,
// disagreement with the batch routing).
//
//===----------------------------------------------------------------------===//

#include "compiler/Conversion/MomaToLinalg/KernelBuilder.h"
#include "compiler/Conversion/MomaToLinalg/Patterns.h"
#include "compiler/Conversion/MomaToLinalg/RoutingHelpers.h"

#include "dialects/moma/IR/MomaOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

using namespace mlir;
using namespace momac::lowering;
namespace moma = mlir::moma;

namespace {

/// [n, E] f32: 1 where the batch router chose token i for output e (i among
/// indices[e], or among `indices` for a single output), else 0.
Value choiceMask(KernelBuilder &kb, Value predictions, Value indices) {
  auto type = cast<RankedTensorType>(predictions.getType());
  Value chosen = kb.zeros(type.getShape(), kb.f32,
                          kb.dynamicOf(type.getShape(), kb.dims(predictions)));
  bool perExpert = cast<RankedTensorType>(indices.getType()).getRank() == 2;
  Value one = kb.f32Const(1.0);
  return kb
      .loops(kb.dims(indices), {chosen},
             [&](OpBuilder &b, Location loc, ValueRange ivs, ValueRange state) {
               Value row = toIndex(
                   b, loc, tensor::ExtractOp::create(b, loc, indices, ivs));
               Value column =
                   perExpert ? ivs[0]
                             : arith::ConstantIndexOp::create(b, loc, 0);
               return SmallVector<Value>{tensor::InsertOp::create(
                   b, loc, one, state[0], ValueRange{row, column})};
             })
      .front();
}

/// The number of [n, E] decisions of a router, n E, as an f32 scalar; with
/// `valid` (a one-element i32 count), n is valid[0].
Value decisionCount(OpBuilder &b, Location loc, Value predictions,
                    Value valid = Value()) {
  auto type = cast<RankedTensorType>(predictions.getType());
  Value rows = valid ? validCount(b, loc, valid)
                     : tensor::DimOp::create(b, loc, predictions, 0).getResult();
  Value asFloat = arith::UIToFPOp::create(
      b, loc, b.getF32Type(),
      arith::IndexCastUIOp::create(b, loc, b.getI64Type(), rows));
  return arith::MulFOp::create(
      b, loc, asFloat,
      arith::ConstantOp::create(
          b, loc, b.getF32FloatAttr(float(type.getDimSize(1)))));
}
Value decisionCount(KernelBuilder &kb, Value predictions,
                    Value valid = Value()) {
  return decisionCount(kb.b, kb.loc, predictions, valid);
}

/// total / count, or 0 when nothing was counted (an empty group: 0, not
/// 0/0).
Value meanOrZero(KernelBuilder &kb, Value total, Value count) {
  Value some = arith::CmpFOp::create(kb.b, kb.loc, arith::CmpFPredicate::OGT,
                                     count, kb.f32Const(0.0));
  return arith::SelectOp::create(
      kb.b, kb.loc, some, arith::DivFOp::create(kb.b, kb.loc, total, count),
      kb.f32Const(0.0));
}

/// Whether an auxiliary score routes its token (MODEL_SPEC section 6).
Value aboveHalf(OpBuilder &b, Location loc, Value score) {
  return arith::CmpFOp::create(
      b, loc, arith::CmpFPredicate::OGT, score,
      arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0.5f)));
}

struct LowerAuxRouter : OpRewritePattern<moma::AuxRouterOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::AuxRouterOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    Value hidden =
        kb.elementwise({kb.matmulInF32(op.getInput(), op.getW1(), false, true)},
                       kb.f32, [](OpBuilder &b, Location loc, ValueRange args) {
                         return SmallVector<Value>{silu(b, loc, args[0])};
                       });
    Value logits = kb.matmulInF32(hidden, op.getW2(), false, true);
    rewriter.replaceOp(op, sigmoidOf(kb, logits));
    return success();
  }
};

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

struct LowerCausalRoute : OpRewritePattern<moma::CausalRouteOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::CausalRouteOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    Value scores = op.getScores(), predictions = op.getPredictions();
    Value n = kb.dim(predictions, 0);
    int64_t outputs = cast<RankedTensorType>(scores.getType()).getDimSize(1);
    // k: the most tokens any output takes.
    Value zero = kb.index(0), one = kb.index(1);
    Value k = kb.loops({kb.index(outputs)}, {zero},
                       [&](OpBuilder &b, Location at, ValueRange e,
                           ValueRange longest) {
                         Value count =
                             scf::ForOp::create(
                                 b, at, zero, n, one, ValueRange{zero},
                                 [&](OpBuilder &inner, Location in, Value i,
                                     ValueRange state) {
                                   Value p = tensor::ExtractOp::create(
                                       inner, in, predictions,
                                       ValueRange{i, e[0]});
                                   Value next = arith::SelectOp::create(
                                       inner, in, aboveHalf(inner, in, p),
                                       arith::AddIOp::create(
                                           inner, in, state[0],
                                           arith::ConstantIndexOp::create(
                                               inner, in, 1)),
                                       state[0]);
                                   scf::YieldOp::create(inner, in, next);
                                 })
                                 .getResult(0);
                         return SmallVector<Value>{arith::MaxUIOp::create(
                             b, at, longest[0], count)};
                       })
                  .front();
    // Rows padded with token 0 at gate 0; each output's tokens in order.
    SmallVector<int64_t> shape = {outputs, ShapedType::kDynamic};
    Value indices = kb.zeros(shape, kb.i32, {k});
    Value gates = kb.zeros(shape, kb.f32, {k});
    SmallVector<Value> filled = kb.loops(
        {kb.index(outputs)}, {indices, gates},
        [&](OpBuilder &b, Location at, ValueRange e, ValueRange state) {
          auto loop = scf::ForOp::create(
              b, at, zero, n, one, ValueRange{state[0], state[1], zero},
              [&](OpBuilder &inner, Location in, Value i, ValueRange carried) {
                Value p = tensor::ExtractOp::create(inner, in, predictions,
                                                    ValueRange{i, e[0]});
                auto taken = scf::IfOp::create(
                    inner, in, aboveHalf(inner, in, p),
                    [&](OpBuilder &then, Location th) {
                      Value at2[] = {e[0], carried[2]};
                      Value s = tensor::ExtractOp::create(then, th, scores,
                                                          ValueRange{i, e[0]});
                      Value row = tensor::InsertOp::create(
                          then, th, toI32(then, th, i), carried[0], at2);
                      Value gate =
                          tensor::InsertOp::create(then, th, s, carried[1], at2);
                      Value next = arith::AddIOp::create(
                          then, th, carried[2],
                          arith::ConstantIndexOp::create(then, th, 1));
                      scf::YieldOp::create(then, th,
                                           ValueRange{row, gate, next});
                    },
                    [&](OpBuilder &other, Location ot) {
                      scf::YieldOp::create(other, ot, carried);
                    });
                scf::YieldOp::create(inner, in, taken.getResults());
              });
          return SmallVector<Value>{loop.getResult(0), loop.getResult(1)};
        });
    rewriter.replaceOp(op, filled);
    return success();
  }
};

struct LowerAuxRouterConfusion : OpRewritePattern<moma::AuxRouterConfusionOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::AuxRouterConfusionOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    Value predictions = op.getPredictions();
    Value chosen = choiceMask(kb, predictions, op.getIndices());
    Value valid = op.getValid();
    AffineMap toScalar = AffineMap::get(2, 0, {}, rewriter.getContext());
    // Sums of [predicted and chosen], [predicted], [chosen], and with
    // padding rows the decisions too: counted in the kernel, the valid
    // count is not a host-side scalar a later kernel would wait for.
    SmallVector<Value> inits;
    for (int i = 0, e = valid ? 4 : 3; i < e; ++i)
      inits.push_back(kb.zeros({}, kb.f32));
    SmallVector<AffineMap> maps = {kb.identity(2), kb.identity(2)};
    maps.append(inits.size(), toScalar);
    ValueRange sums = kb.generic(
        {predictions, chosen}, inits, maps, {kRed, kRed},
        [&](OpBuilder &b, Location at, ValueRange args) {
          Value zero = arith::ConstantOp::create(b, at, b.getF32FloatAttr(0));
          Value one = arith::ConstantOp::create(b, at, b.getF32FloatAttr(1));
          Value predicted = arith::SelectOp::create(
              b, at, aboveHalf(b, at, args[0]), one, zero);
          Value chosenHere = args[1];
          Value decision = one;
          if (valid) {
            Value token =
                isRowValid(b, at, linalg::IndexOp::create(b, at, 0), valid);
            predicted = arith::SelectOp::create(b, at, token, predicted, zero);
            chosenHere = arith::SelectOp::create(b, at, token, chosenHere, zero);
            decision = arith::SelectOp::create(b, at, token, one, zero);
          }
          Value both = arith::MulFOp::create(b, at, predicted, chosenHere);
          SmallVector<Value> next = {
              arith::AddFOp::create(b, at, args[2], both),
              arith::AddFOp::create(b, at, args[3], predicted),
              arith::AddFOp::create(b, at, args[4], chosenHere)};
          if (valid)
            next.push_back(arith::AddFOp::create(b, at, args[5], decision));
          return next;
        });
    Value decisions =
        valid ? scalarOf(kb, sums[3]) : decisionCount(kb, predictions);
    rewriter.replaceOpWithNewOp<tensor::FromElementsOp>(
        op, op.getCounts().getType(),
        ValueRange{scalarOf(kb, sums[0]), scalarOf(kb, sums[1]),
                   scalarOf(kb, sums[2]), decisions});
    return success();
  }
};

struct LowerRoutingDisagreement
    : OpRewritePattern<moma::RoutingDisagreementOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::RoutingDisagreementOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    Value predictions = op.getPredictions();
    Value chosen = choiceMask(kb, predictions, op.getIndices());
    Value total =
        kb.generic({predictions, chosen}, kb.zeros({}, kb.f32),
                   {kb.identity(2), kb.identity(2),
                    AffineMap::get(2, 0, {}, rewriter.getContext())},
                   {kRed, kRed},
                   [](OpBuilder &b, Location loc, ValueRange args) {
                     // The mask is 0 or 1: above a half where chosen.
                     Value predicted = aboveHalf(b, loc, args[0]);
                     Value batch = aboveHalf(b, loc, args[1]);
                     Value differ = arith::XOrIOp::create(b, loc, predicted,
                                                          batch);
                     Value count = arith::UIToFPOp::create(
                         b, loc, b.getF32Type(), differ);
                     return SmallVector<Value>{
                         arith::AddFOp::create(b, loc, args[2], count)};
                   })
            .front();
    // An empty group disagrees nowhere.
    Value fraction =
        meanOrZero(kb, scalarOf(kb, total), decisionCount(kb, predictions));
    rewriter.replaceOp(op, tensorOf(kb, fraction));
    return success();
  }
};

struct LowerAuxRouterLoss : OpRewritePattern<moma::AuxRouterLossOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::AuxRouterLossOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    Value predictions = op.getPredictions();
    Value chosen = choiceMask(kb, predictions, op.getIndices());
    // Binary cross-entropy with logs clamped at -100, as torch's BCELoss.
    Value sum = kb.zeros({}, kb.f32);
    Value total =
        kb.generic(
              {predictions, chosen}, sum,
              {kb.identity(2), kb.identity(2),
               AffineMap::get(2, 0, {}, rewriter.getContext())},
              {kRed, kRed},
              [&](OpBuilder &b, Location loc, ValueRange args) {
                Value floor = arith::ConstantOp::create(
                    b, loc, b.getF32FloatAttr(-100.0f));
                Value oneF =
                    arith::ConstantOp::create(b, loc, b.getF32FloatAttr(1.0f));
                Value logP = arith::MaximumFOp::create(
                    b, loc, math::LogOp::create(b, loc, args[0]), floor);
                Value logQ = arith::MaximumFOp::create(
                    b, loc,
                    math::LogOp::create(
                        b, loc, arith::SubFOp::create(b, loc, oneF, args[0])),
                    floor);
                Value notChosen = arith::SubFOp::create(b, loc, oneF, args[1]);
                Value term = arith::AddFOp::create(
                    b, loc, arith::MulFOp::create(b, loc, args[1], logP),
                    arith::MulFOp::create(b, loc, notChosen, logQ));
                if (Value valid = op.getValid())
                  term = arith::SelectOp::create(
                      b, loc,
                      isRowValid(b, loc, linalg::IndexOp::create(b, loc, 0),
                                 valid),
                      term,
                      arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0)));
                return SmallVector<Value>{
                    arith::SubFOp::create(b, loc, args[2], term)};
              })
            .front();
    // A router that sees no tokens (an empty group) adds 0.
    Value mean = meanOrZero(kb, scalarOf(kb, total),
                            decisionCount(kb, predictions, op.getValid()));
    rewriter.replaceOp(op, tensorOf(kb, mean));
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

} // namespace

void momac::lowering::populateAuxRouterLoweringPatterns(
    RewritePatternSet &patterns) {
  patterns.add<LowerAuxRouter, LowerAuxRouterGrad, LowerCausalRoute,
               LowerAuxRouterConfusion, LowerRoutingDisagreement,
               LowerAuxRouterLoss, LowerAuxRouterLossGrad>(
      patterns.getContext());
}
