//===- ConstantsToLinalg.cpp - Large constants as fills -------------------===//
//
// Upstream ops the moma lowering also rewrites: splat constants too large to
// be globals, and tensor.splat, both as fills.
//
//===----------------------------------------------------------------------===//

#include "compiler/Conversion/MomaToLinalg/KernelBuilder.h"
#include "compiler/Conversion/MomaToLinalg/Patterns.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

using namespace mlir;
using namespace momac::lowering;

namespace {

/// Splat tensor constants above this many elements become fills.
constexpr int64_t kLargestSplatConstant = 1024;

/// A large splat constant (the zeros a gradient accumulates into, such as
/// the embedding table's) becomes tensor.empty + linalg.fill: bufferized as
/// a constant it would be a global of the tensor's size in model.so's
/// read-only data (512 MB for a 1.4B model's table), copied into a new
/// buffer at every step, where a fill writes the buffer once, and writes
/// it in place of a result's buffer when it is one.
struct LowerLargeSplatConstant : OpRewritePattern<arith::ConstantOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(arith::ConstantOp op,
                                PatternRewriter &rewriter) const override {
    if (!isLargeSplatConstant(op))
      return failure();
    auto splat = cast<SplatElementsAttr>(op.getValue());
    auto type = cast<RankedTensorType>(op.getType());
    KernelBuilder kb(rewriter, op.getLoc());
    Value value = arith::ConstantOp::create(
        rewriter, op.getLoc(), cast<TypedAttr>(splat.getSplatValue<Attribute>()));
    rewriter.replaceOp(op, kb.filled(type.getShape(), type.getElementType(),
                                     value));
    return success();
  }
};

/// tensor.splat (the gradient rules' zeros) becomes the same fill, before
/// canonicalization folds a static one into a constant.
struct LowerTensorSplat : OpRewritePattern<tensor::SplatOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(tensor::SplatOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    RankedTensorType type = op.getType();
    rewriter.replaceOp(op, kb.filled(type.getShape(), type.getElementType(),
                                     op.getInput(), op.getDynamicSizes()));
    return success();
  }
};

} // namespace

bool momac::lowering::isLargeSplatConstant(arith::ConstantOp op) {
  auto splat = dyn_cast<SplatElementsAttr>(op.getValue());
  return splat && isa<RankedTensorType>(op.getType()) &&
         splat.getNumElements() > kLargestSplatConstant;
}

void momac::lowering::populateConstantLoweringPatterns(
    RewritePatternSet &patterns) {
  patterns.add<LowerLargeSplatConstant, LowerTensorSplat>(
      patterns.getContext());
}
