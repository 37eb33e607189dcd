//===- FeedForwardToLinalg.cpp - Linear maps, matmuls and SwiGLU ----------===//
//
// moma.linear, moma.matmul (the products the gradient rules of the linear
// maps build) and moma.swiglu, dense and as stacked experts, with its
// gradient. Every product is a linalg.contract the targets' GEMM libraries
// take (KernelBuilder::contract).
//
//===----------------------------------------------------------------------===//

#include "compiler/Conversion/MomaToLinalg/KernelBuilder.h"
#include "compiler/Conversion/MomaToLinalg/Patterns.h"

#include "dialects/moma/IR/MomaOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"

using namespace mlir;
using namespace momac::lowering;
namespace moma = mlir::moma;

namespace {

Value addTensors(KernelBuilder &kb, Value x, Value y) {
  return kb.elementwise({x, y}, kb.f32,
                        [](OpBuilder &b, Location loc, ValueRange args) {
                          return SmallVector<Value>{
                              arith::AddFOp::create(b, loc, args[0], args[1])};
                        });
}

struct LowerLinear : OpRewritePattern<moma::LinearOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::LinearOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    rewriter.replaceOp(op,
                       kb.contractTransposed(op.getInput(), op.getWeight()));
    return success();
  }
};

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

struct LowerSwiGLU : OpRewritePattern<moma::SwiGLUOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::SwiGLUOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    Value gate = kb.contractTransposed(op.getInput(), op.getW1());
    Value up = kb.contractTransposed(op.getInput(), op.getW3());
    Value hidden = kb.elementwise(
        {gate, up}, kb.f32, [](OpBuilder &b, Location loc, ValueRange args) {
          return SmallVector<Value>{
              arith::MulFOp::create(b, loc, silu(b, loc, args[0]), args[1])};
        });
    rewriter.replaceOp(op, kb.contractTransposed(hidden, op.getW2()));
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

} // namespace

void momac::lowering::populateFeedForwardLoweringPatterns(
    RewritePatternSet &patterns) {
  patterns.add<LowerLinear, LowerMatmul, LowerSwiGLU, LowerSwiGLUGrad>(
      patterns.getContext());
}
