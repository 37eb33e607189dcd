//===- OptimizerToLinalg.cpp - Gradient norm and AdamW --------------------===//
//
// What the optimizer step is made of: the global gradient norm that
// clipping divides by, and AdamW's update of one parameter and its moments.
//
//===----------------------------------------------------------------------===//

#include "compiler/Conversion/MomaToLinalg/KernelBuilder.h"
#include "compiler/Conversion/MomaToLinalg/Patterns.h"

#include "dialects/moma/IR/MomaOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

using namespace mlir;
using namespace momac::lowering;
using mlir::utils::IteratorType;
namespace moma = mlir::moma;

namespace {

/// `fallback` named after the parameter whose gradient `tensor` is, where it
/// is an argument of an entry point named "grad.<parameter>".
Location parameterLocation(Value tensor, Location fallback) {
  auto argument = dyn_cast<BlockArgument>(tensor);
  auto func = argument ? dyn_cast<FunctionOpInterface>(
                             argument.getOwner()->getParentOp())
                       : nullptr;
  if (!func || argument.getOwner() != &func.getFunctionBody().front())
    return fallback;
  auto name = func.getArgAttrOfType<StringAttr>(argument.getArgNumber(),
                                                mlir::moma::kParamAttrName);
  if (!name || !name.getValue().starts_with("grad."))
    return fallback;
  return NameLoc::get(
      StringAttr::get(tensor.getContext(), name.getValue().drop_front(5)),
      fallback);
}

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
      // Each tensor's part is named after its parameter, so that a layer's
      // part belongs to its layer (--stats, -moma-outline-layers).
      kb.loc = parameterLocation(tensor, op.getLoc());
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
    kb.loc = op.getLoc();
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

void momac::lowering::populateOptimizerLoweringPatterns(
    RewritePatternSet &patterns) {
  patterns.add<LowerGlobalNorm, LowerAdamWUpdate>(patterns.getContext());
}
