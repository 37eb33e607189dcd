//===- CrossEntropyToLinalg.cpp - The loss and its gradient ---------------===//
//
// moma.cross_entropy (mean cross-entropy plus z-loss, and the mean per
// modality, MODEL_SPEC section 7) and its gradient.
//
//===----------------------------------------------------------------------===//

#include "compiler/Conversion/MomaToLinalg/KernelBuilder.h"
#include "compiler/Conversion/MomaToLinalg/Patterns.h"

#include "dialects/moma/IR/MomaOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

#include <limits>

using namespace mlir;
using namespace momac::lowering;
namespace moma = mlir::moma;

namespace {

/// lse[i] = log(sum_v exp(logits[i, v])), computed stably from the row max.
Value rowLogSumExp(KernelBuilder &kb, Value logits) {
  auto type = cast<RankedTensorType>(logits.getType());
  SmallVector<Value> rowsDyn = type.isDynamicDim(0)
                                   ? SmallVector<Value>{kb.dim(logits, 0)}
                                   : SmallVector<Value>{};
  SmallVector<int64_t> rowShape = {type.getDimSize(0)};
  Value minusInf = kb.f32Const(-std::numeric_limits<double>::infinity());
  Value rowMax =
      kb.generic({logits}, kb.filled(rowShape, kb.f32, minusInf, rowsDyn),
                 {kb.identity(2), kb.map(2, {0})}, {kPar, kRed},
                 [](OpBuilder &b, Location loc, ValueRange args) {
                   return SmallVector<Value>{
                       arith::MaximumFOp::create(b, loc, args[0], args[1])};
                 })
          .front();
  Value sumExp =
      kb.generic({logits, rowMax}, kb.zeros(rowShape, kb.f32, rowsDyn),
                 {kb.identity(2), kb.map(2, {0}), kb.map(2, {0})}, {kPar, kRed},
                 [](OpBuilder &b, Location loc, ValueRange args) {
                   Value e = math::ExpOp::create(
                       b, loc, arith::SubFOp::create(b, loc, args[0], args[1]));
                   return SmallVector<Value>{
                       arith::AddFOp::create(b, loc, args[2], e)};
                 })
          .front();
  return kb.elementwise(
      {rowMax, sumExp}, kb.f32,
      [](OpBuilder &b, Location loc, ValueRange args) {
        return SmallVector<Value>{arith::AddFOp::create(
            b, loc, args[0], math::LogOp::create(b, loc, args[1]))};
      });
}

/// Sum of a 1-D f32 tensor, optionally only where `mask(i)` holds, with the
/// count of summed entries: (sum, count) as 0-d tensors.
std::pair<Value, Value>
maskedSum(KernelBuilder &kb, Value values,
          function_ref<Value(OpBuilder &, Location)> mask) {
  Value sum = kb.zeros({}, kb.f32);
  Value count = kb.zeros({}, kb.f32);
  ValueRange results = kb.generic(
      {values}, {sum, count},
      {kb.identity(1), AffineMap::get(1, 0, {}, kb.b.getContext()),
       AffineMap::get(1, 0, {}, kb.b.getContext())},
      {kRed}, [&](OpBuilder &b, Location loc, ValueRange args) {
        Value newSum = arith::AddFOp::create(b, loc, args[1], args[0]);
        Value newCount = arith::AddFOp::create(
            b, loc, args[2],
            arith::ConstantOp::create(b, loc, b.getF32FloatAttr(1.0f)));
        if (!mask)
          return SmallVector<Value>{newSum, newCount};
        Value keep = mask(b, loc);
        return SmallVector<Value>{
            arith::SelectOp::create(b, loc, keep, newSum, args[1]),
            arith::SelectOp::create(b, loc, keep, newCount, args[2])};
      });
  return {results[0], results[1]};
}

struct LowerCrossEntropy : OpRewritePattern<moma::CrossEntropyOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::CrossEntropyOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    Value logits = op.getLogits(), targets = op.getTargets();
    auto type = cast<RankedTensorType>(logits.getType());
    SmallVector<Value> rowsDyn = type.isDynamicDim(0)
                                     ? SmallVector<Value>{kb.dim(logits, 0)}
                                     : SmallVector<Value>{};
    SmallVector<int64_t> rowShape = {type.getDimSize(0)};
    Value lse = rowLogSumExp(kb, logits);
    Value crossEntropy =
        kb.generic({lse, targets}, kb.empty(rowShape, kb.f32, rowsDyn),
                   {kb.identity(1), kb.identity(1), kb.identity(1)}, {kPar},
                   [&](OpBuilder &b, Location loc, ValueRange args) {
                     Value i = linalg::IndexOp::create(b, loc, 0);
                     Value target = tensor::ExtractOp::create(
                         b, loc, logits,
                         ValueRange{i, toIndex(b, loc, args[1])});
                     return SmallVector<Value>{
                         arith::SubFOp::create(b, loc, args[0], target)};
                   })
            .front();

    Value lseSquared = kb.elementwise(
        {lse}, kb.f32, [](OpBuilder &b, Location loc, ValueRange args) {
          return SmallVector<Value>{
              arith::MulFOp::create(b, loc, args[0], args[0])};
        });

    auto [ceSum, count] = maskedSum(kb, crossEntropy, nullptr);
    auto [zSum, unused] = maskedSum(kb, lseSquared, nullptr);
    (void)unused;
    Value countScalar = scalarOf(kb, count);
    Value meanCe = arith::DivFOp::create(rewriter, op.getLoc(),
                                         scalarOf(kb, ceSum), countScalar);
    Value meanZ = arith::DivFOp::create(rewriter, op.getLoc(),
                                        scalarOf(kb, zSum), countScalar);
    Value loss = arith::AddFOp::create(
        rewriter, op.getLoc(), meanCe,
        arith::MulFOp::create(rewriter, op.getLoc(),
                              kb.f32Const(op.getZLoss().convertToDouble()),
                              meanZ));
    SmallVector<Value> results = {tensorOf(kb, loss)};

    // Per modality: the plain mean over its targets, 0 without any.
    for (Attribute rangeList : op.getModalityRanges()) {
      ArrayRef<int64_t> bounds =
          cast<DenseI64ArrayAttr>(rangeList).asArrayRef();
      auto [sum, members] =
          maskedSum(kb, crossEntropy, [&](OpBuilder &b, Location loc) {
            Value i = linalg::IndexOp::create(b, loc, 0);
            Value target =
                tensor::ExtractOp::create(b, loc, targets, ValueRange{i});
            return inRanges(b, loc, target, bounds);
          });
      Value membersScalar = scalarOf(kb, members);
      Value none = arith::CmpFOp::create(rewriter, op.getLoc(),
                                         arith::CmpFPredicate::OEQ,
                                         membersScalar, kb.f32Const(0.0));
      Value safeCount = arith::SelectOp::create(
          rewriter, op.getLoc(), none, kb.f32Const(1.0), membersScalar);
      Value mean = arith::DivFOp::create(rewriter, op.getLoc(),
                                         scalarOf(kb, sum), safeCount);
      results.push_back(
          tensorOf(kb, arith::SelectOp::create(rewriter, op.getLoc(), none,
                                               kb.f32Const(0.0), mean)));
    }
    rewriter.replaceOp(op, results);
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

} // namespace

void momac::lowering::populateCrossEntropyLoweringPatterns(
    RewritePatternSet &patterns) {
  patterns.add<LowerCrossEntropy, LowerCrossEntropyGrad>(patterns.getContext());
}
