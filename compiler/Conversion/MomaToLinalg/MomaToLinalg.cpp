//===- MomaToLinalg.cpp - moma ops to structured code on tensors ----------===//
//
// One pattern per moma op. Shapes follow the op descriptions in MomaOps.td;
// the math follows shared/MODEL_SPEC.md. Kernels are linalg.generic ops so
// that the CPU target turns them into parallel loops and the CUDA target into
// GPU kernels from the same code; contractions stay recognizable for the GEMM
// library rewrite. Data-dependent routing steps are scf.for loops over
// tensors, which bufferize in place.
//
//===----------------------------------------------------------------------===//

#include "compiler/Conversion/Passes.h"

#include "dialects/moma/IR/MomaOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/DialectConversion.h"

#include <limits>

namespace momac {
#define GEN_PASS_DEF_CONVERTMOMATOLINALG
#include "compiler/Conversion/Passes.h.inc"
} // namespace momac

using namespace mlir;
namespace moma = mlir::moma;
using utils::IteratorType;

namespace {

constexpr IteratorType kPar = IteratorType::parallel;
constexpr IteratorType kRed = IteratorType::reduction;

//===----------------------------------------------------------------------===//
// Building blocks
//===----------------------------------------------------------------------===//

/// A small builder for the kernels below: index and float constants, empty
/// and filled tensors, generic ops and loop nests, all at one location.
class KernelBuilder {
public:
  KernelBuilder(PatternRewriter &rewriter, Location loc)
      : b(rewriter), loc(loc), f32(rewriter.getF32Type()),
        i32(rewriter.getI32Type()) {}

  PatternRewriter &b;
  Location loc;
  Type f32, i32;

  Value index(int64_t value) {
    return arith::ConstantIndexOp::create(b, loc, value);
  }
  Value f32Const(double value) {
    return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(value));
  }
  Value f64Const(double value) {
    return arith::ConstantOp::create(b, loc, b.getF64FloatAttr(value));
  }
  Value i32Const(int32_t value) {
    return arith::ConstantOp::create(b, loc, b.getI32IntegerAttr(value));
  }

  /// The size of dimension `d` of `tensor` as an index value.
  Value dim(Value tensor, int64_t d) {
    return tensor::DimOp::create(b, loc, tensor, d);
  }
  /// Index values for the dynamic dimensions of `shape` taken from `sizes`.
  SmallVector<Value> dynamicOf(ArrayRef<int64_t> shape, ValueRange sizes) {
    SmallVector<Value> dynamic;
    for (auto [extent, size] : llvm::zip(shape, sizes))
      if (ShapedType::isDynamic(extent))
        dynamic.push_back(size);
    return dynamic;
  }

  Value empty(ArrayRef<int64_t> shape, Type element, ValueRange dynamic = {}) {
    return tensor::EmptyOp::create(b, loc, shape, element, dynamic);
  }
  Value filled(ArrayRef<int64_t> shape, Type element, Value value,
               ValueRange dynamic = {}) {
    Value init = empty(shape, element, dynamic);
    return linalg::FillOp::create(b, loc, ValueRange{value}, ValueRange{init})
        .getResult(0);
  }
  Value zeros(ArrayRef<int64_t> shape, Type element, ValueRange dynamic = {}) {
    Value zero = arith::ConstantOp::create(b, loc, b.getZeroAttr(element));
    return filled(shape, element, zero, dynamic);
  }

  AffineMap map(unsigned numDims, ArrayRef<unsigned> results) {
    SmallVector<AffineExpr> exprs;
    for (unsigned r : results)
      exprs.push_back(b.getAffineDimExpr(r));
    return AffineMap::get(numDims, 0, exprs, b.getContext());
  }
  AffineMap identity(unsigned numDims) {
    return b.getMultiDimIdentityMap(numDims);
  }

  using Body =
      function_ref<SmallVector<Value>(OpBuilder &, Location, ValueRange)>;
  /// A linalg.generic; `body` returns the values to yield.
  ValueRange generic(ValueRange inputs, ValueRange outputs,
                     ArrayRef<AffineMap> maps, ArrayRef<IteratorType> iterators,
                     Body body) {
    auto op = linalg::GenericOp::create(
        b, loc, ValueRange(outputs).getTypes(), inputs, outputs, maps,
        iterators, [&](OpBuilder &nested, Location at, ValueRange args) {
          linalg::YieldOp::create(nested, at, body(nested, at, args));
        });
    return op.getResults();
  }

  /// An element-wise map of same-shape tensors into a new tensor of
  /// `element` type.
  Value elementwise(ValueRange inputs, Type element, Body body) {
    auto type = cast<RankedTensorType>(inputs.front().getType());
    SmallVector<Value> sizes = dims(inputs.front());
    Value init =
        empty(type.getShape(), element, dynamicOf(type.getShape(), sizes));
    SmallVector<AffineMap> maps(inputs.size() + 1, identity(type.getRank()));
    SmallVector<IteratorType> iterators(type.getRank(), kPar);
    return generic(inputs, init, maps, iterators, body).front();
  }

  SmallVector<Value> dims(Value tensor) {
    SmallVector<Value> sizes;
    auto type = cast<RankedTensorType>(tensor.getType());
    for (int64_t d = 0; d < type.getRank(); ++d)
      sizes.push_back(type.isDynamicDim(d) ? dim(tensor, d)
                                           : index(type.getDimSize(d)));
    return sizes;
  }

  /// scf.for loops from 0 to each of `upper` carrying `state`; returns the
  /// final state.
  SmallVector<Value>
  loops(ValueRange upper, ValueRange state,
        function_ref<SmallVector<Value>(OpBuilder &, Location, ValueRange,
                                        ValueRange)>
            body) {
    SmallVector<Value> lower(upper.size(), index(0)),
        steps(upper.size(), index(1));
    scf::LoopNest nest = scf::buildLoopNest(
        b, loc, lower, upper, steps, state,
        [&](OpBuilder &nested, Location at, ValueRange ivs, ValueRange args) {
          return scf::ValueVector(body(nested, at, ivs, args));
        });
    return SmallVector<Value>(nest.results);
  }

  /// x w^T over the last dimension, with an optional leading expert
  /// dimension: [.., m, k] x [.., n, k] -> [.., m, n], accumulated in f32.
  Value contractTransposed(Value x, Value w) {
    auto xType = cast<RankedTensorType>(x.getType());
    auto wType = cast<RankedTensorType>(w.getType());
    int64_t rank = xType.getRank();
    SmallVector<int64_t> shape(xType.getShape());
    shape.back() = wType.getDimSize(rank - 2);
    SmallVector<Value> sizes = dims(x);
    sizes.back() = dim(w, rank - 2);
    Value init = zeros(shape, f32, dynamicOf(shape, sizes));
    // Loops: [e,] m, n, k.
    unsigned loopsCount = rank + 1;
    SmallVector<AffineMap> maps;
    if (rank == 2)
      maps = {map(3, {0, 2}), map(3, {1, 2}), map(3, {0, 1})};
    else
      maps = {map(4, {0, 1, 3}), map(4, {0, 2, 3}), map(4, {0, 1, 2})};
    SmallVector<IteratorType> iterators(loopsCount, kPar);
    iterators.back() = kRed;
    return generic({x, w}, init, maps, iterators,
                   [](OpBuilder &nb, Location at, ValueRange args) {
                     Value product =
                         arith::MulFOp::create(nb, at, args[0], args[1]);
                     return SmallVector<Value>{
                         arith::AddFOp::create(nb, at, args[2], product)};
                   })
        .front();
  }

  /// [n, H * hd] -> [n, H, hd] and back, for per-head kernels.
  Value splitHeads(Value x, int64_t heads) {
    auto type = cast<RankedTensorType>(x.getType());
    int64_t headDim = type.getDimSize(1) / heads;
    auto split = RankedTensorType::get({type.getDimSize(0), heads, headDim},
                                       type.getElementType());
    SmallVector<OpFoldResult> shape = {
        type.isDynamicDim(0) ? OpFoldResult(dim(x, 0))
                             : OpFoldResult(b.getIndexAttr(type.getDimSize(0))),
        b.getIndexAttr(heads), b.getIndexAttr(headDim)};
    return tensor::ExpandShapeOp::create(
        b, loc, split, x, SmallVector<ReassociationIndices>{{0}, {1, 2}},
        shape);
  }
  Value joinHeads(Value x, RankedTensorType type) {
    return tensor::CollapseShapeOp::create(
        b, loc, type, x, SmallVector<ReassociationIndices>{{0}, {1, 2}});
  }
};

Value sigmoid(OpBuilder &b, Location loc, Value x) {
  Value one = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(1.0f));
  Value negated = arith::NegFOp::create(b, loc, x);
  Value denominator =
      arith::AddFOp::create(b, loc, one, math::ExpOp::create(b, loc, negated));
  return arith::DivFOp::create(b, loc, one, denominator);
}

Value silu(OpBuilder &b, Location loc, Value x) {
  return arith::MulFOp::create(b, loc, x, sigmoid(b, loc, x));
}

Value toIndex(OpBuilder &b, Location loc, Value i32Value) {
  return arith::IndexCastOp::create(b, loc, b.getIndexType(), i32Value);
}
Value toI32(OpBuilder &b, Location loc, Value indexValue) {
  return arith::IndexCastOp::create(b, loc, b.getI32Type(), indexValue);
}

/// True when `id` lies in one of the half-open ranges "lo0, hi0, lo1, ...".
Value inRanges(OpBuilder &b, Location loc, Value id, ArrayRef<int64_t> bounds) {
  Value result = arith::ConstantOp::create(b, loc, b.getBoolAttr(false));
  for (size_t r = 0; r < bounds.size(); r += 2) {
    Value lo = arith::ConstantOp::create(
        b, loc, b.getI32IntegerAttr(int32_t(bounds[r])));
    Value hi = arith::ConstantOp::create(
        b, loc, b.getI32IntegerAttr(int32_t(bounds[r + 1])));
    Value above =
        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sge, id, lo);
    Value below =
        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, id, hi);
    result = arith::OrIOp::create(b, loc, result,
                                  arith::AndIOp::create(b, loc, above, below));
  }
  return result;
}

/// rank[e, i] = #{j : s[j, e] > s[i, e] or (s[j, e] == s[i, e] and j < i)}:
/// the slot of token i in expert e's descending order, ties to the lower
/// index (MODEL_SPEC sections 4 and 5). scores: [n, E] -> ranks [E, n] i32.
Value rankTokens(KernelBuilder &kb, Value scores) {
  auto type = cast<RankedTensorType>(scores.getType());
  Value n = kb.dim(scores, 0);
  int64_t experts = type.getDimSize(1);
  SmallVector<int64_t> shape = {experts, type.getDimSize(0)};
  Value init = kb.zeros(shape, kb.i32,
                        type.isDynamicDim(0) ? ValueRange{n} : ValueRange{});
  // Loops (e, i, j); inputs s[j, e] and s[i, e].
  return kb
      .generic(
          {scores, scores}, init,
          {kb.map(3, {2, 0}), kb.map(3, {1, 0}), kb.map(3, {0, 1})},
          {kPar, kPar, kRed},
          [](OpBuilder &b, Location loc, ValueRange args) {
            Value i = linalg::IndexOp::create(b, loc, 1);
            Value j = linalg::IndexOp::create(b, loc, 2);
            Value higher = arith::CmpFOp::create(
                b, loc, arith::CmpFPredicate::OGT, args[0], args[1]);
            Value equal = arith::CmpFOp::create(
                b, loc, arith::CmpFPredicate::OEQ, args[0], args[1]);
            Value earlier =
                arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, j, i);
            Value before = arith::OrIOp::create(
                b, loc, higher, arith::AndIOp::create(b, loc, equal, earlier));
            Value one = arith::ExtUIOp::create(b, loc, b.getI32Type(), before);
            return SmallVector<Value>{
                arith::AddIOp::create(b, loc, args[2], one)};
          })
      .front();
}

/// ceil(fraction * count) in IEEE double, as an index (MODEL_SPEC 4 and 5).
Value ceilFraction(KernelBuilder &kb, Value count, double numerator,
                   double denominator) {
  OpBuilder &b = kb.b;
  Value asInt = arith::IndexCastUIOp::create(b, kb.loc, b.getI64Type(), count);
  Value asDouble = arith::UIToFPOp::create(b, kb.loc, b.getF64Type(), asInt);
  Value scaled =
      arith::MulFOp::create(b, kb.loc, kb.f64Const(numerator), asDouble);
  Value divided =
      arith::DivFOp::create(b, kb.loc, scaled, kb.f64Const(denominator));
  Value ceiled = math::CeilOp::create(b, kb.loc, divided);
  Value back = arith::FPToUIOp::create(b, kb.loc, b.getI64Type(), ceiled);
  return arith::IndexCastUIOp::create(b, kb.loc, b.getIndexType(), back);
}

//===----------------------------------------------------------------------===//
// Token layout
//===----------------------------------------------------------------------===//

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

//===----------------------------------------------------------------------===//
// Transformer compute
//===----------------------------------------------------------------------===//

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
    Value sumSquares =
        kb.generic({x}, kb.zeros({type.getDimSize(0)}, kb.f32, rowsDyn),
                   {kb.identity(2), kb.map(2, {0})}, {kPar, kRed},
                   [](OpBuilder &b, Location loc, ValueRange args) {
                     Value square =
                         arith::MulFOp::create(b, loc, args[0], args[0]);
                     return SmallVector<Value>{
                         arith::AddFOp::create(b, loc, args[1], square)};
                   })
            .front();
    double features = double(type.getDimSize(1));
    double eps = op.getEpsilon().convertToDouble();
    Value init = kb.empty(type.getShape(), kb.f32, rowsDyn);
    Value result =
        kb.generic(
              {x, sumSquares, op.getWeight()}, init,
              {kb.identity(2), kb.map(2, {0}), kb.map(2, {1}), kb.identity(2)},
              {kPar, kPar},
              [&](OpBuilder &b, Location loc, ValueRange args) {
                Value mean = arith::DivFOp::create(
                    b, loc, args[1],
                    arith::ConstantOp::create(b, loc,
                                              b.getF32FloatAttr(features)));
                Value shifted = arith::AddFOp::create(
                    b, loc, mean,
                    arith::ConstantOp::create(b, loc, b.getF32FloatAttr(eps)));
                Value scale = math::RsqrtOp::create(b, loc, shifted);
                Value normed = arith::MulFOp::create(b, loc, args[0], scale);
                return SmallVector<Value>{
                    arith::MulFOp::create(b, loc, normed, args[2])};
              })
            .front();
    rewriter.replaceOp(op, result);
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
    double headDim = double(weightType.getDimSize(1));
    Value x = kb.splitHeads(op.getInput(), heads);
    SmallVector<Value> rowsDyn = type.isDynamicDim(0)
                                     ? SmallVector<Value>{kb.dim(x, 0)}
                                     : SmallVector<Value>{};
    SmallVector<int64_t> statShape = {type.getDimSize(0), heads};
    auto sumOf = [&](Value input, bool squaredDeviation, Value mean) {
      SmallVector<Value> inputs = {input};
      SmallVector<AffineMap> maps = {kb.identity(3)};
      if (squaredDeviation) {
        inputs.push_back(mean);
        maps.push_back(kb.map(3, {0, 1}));
      }
      maps.push_back(kb.map(3, {0, 1}));
      return kb
          .generic(inputs, kb.zeros(statShape, kb.f32, rowsDyn), maps,
                   {kPar, kPar, kRed},
                   [&](OpBuilder &b, Location loc, ValueRange args) {
                     Value term = args[0];
                     if (squaredDeviation) {
                       Value deviation =
                           arith::SubFOp::create(b, loc, args[0], args[1]);
                       term =
                           arith::MulFOp::create(b, loc, deviation, deviation);
                     }
                     Value acc = args.back();
                     return SmallVector<Value>{
                         arith::AddFOp::create(b, loc, acc, term)};
                   })
          .front();
    };
    Value divisor = kb.f32Const(headDim);
    auto divide = [&](Value sum) {
      return kb.elementwise(
          {sum}, kb.f32, [&](OpBuilder &b, Location loc, ValueRange args) {
            return SmallVector<Value>{
                arith::DivFOp::create(b, loc, args[0], divisor)};
          });
    };
    Value mean = divide(sumOf(x, false, Value()));
    Value variance = divide(sumOf(x, true, mean));
    Value eps = kb.f32Const(op.getEpsilon().convertToDouble());
    Value init = kb.empty(cast<RankedTensorType>(x.getType()).getShape(),
                          kb.f32, rowsDyn);
    Value normed =
        kb.generic({x, mean, variance, op.getWeight(), op.getBias()}, init,
                   {kb.identity(3), kb.map(3, {0, 1}), kb.map(3, {0, 1}),
                    kb.map(3, {1, 2}), kb.map(3, {1, 2}), kb.identity(3)},
                   {kPar, kPar, kPar},
                   [&](OpBuilder &b, Location loc, ValueRange args) {
                     Value centered =
                         arith::SubFOp::create(b, loc, args[0], args[1]);
                     Value scale = math::RsqrtOp::create(
                         b, loc, arith::AddFOp::create(b, loc, args[2], eps));
                     Value y = arith::MulFOp::create(
                         b, loc, arith::MulFOp::create(b, loc, centered, scale),
                         args[3]);
                     return SmallVector<Value>{
                         arith::AddFOp::create(b, loc, y, args[4])};
                   })
            .front();
    rewriter.replaceOp(op, kb.joinHeads(normed, type));
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
    Value x = kb.splitHeads(op.getInput(), heads);
    Value init = kb.empty(
        cast<RankedTensorType>(x.getType()).getShape(), kb.f32,
        type.isDynamicDim(0) ? ValueRange{kb.dim(x, 0)} : ValueRange{});
    Value rotated =
        kb.generic(
              {x, op.getPositions()}, init,
              {kb.identity(3), kb.map(3, {0}), kb.identity(3)},
              {kPar, kPar, kPar},
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
                // phi = s * theta^(-2 (j mod hd/2) / hd), in double.
                Value pair = arith::RemUIOp::create(b, loc, j, halfIndex);
                Value pairF = arith::UIToFPOp::create(
                    b, loc, b.getF64Type(),
                    arith::IndexCastUIOp::create(b, loc, b.getI64Type(), pair));
                Value exponent = arith::MulFOp::create(
                    b, loc, pairF,
                    arith::ConstantOp::create(
                        b, loc,
                        b.getF64FloatAttr(-2.0 * logTheta / double(headDim))));
                Value frequency = math::ExpOp::create(b, loc, exponent);
                Value position =
                    arith::SIToFPOp::create(b, loc, b.getF64Type(), args[1]);
                Value phi = arith::MulFOp::create(b, loc, position, frequency);
                Value cosine = arith::TruncFOp::create(
                    b, loc, b.getF32Type(), math::CosOp::create(b, loc, phi));
                Value sine = arith::TruncFOp::create(
                    b, loc, b.getF32Type(), math::SinOp::create(b, loc, phi));
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

struct LowerAttention : OpRewritePattern<moma::AttentionOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::AttentionOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    auto type = cast<RankedTensorType>(op.getQuery().getType());
    int64_t heads = op.getNumHeads();
    Value q = kb.splitHeads(op.getQuery(), heads);
    Value k = kb.splitHeads(op.getKey(), heads);
    Value v = kb.splitHeads(op.getValue(), heads);
    Value n = kb.dim(q, 0);
    int64_t rows = type.getDimSize(0);
    SmallVector<int64_t> scoreShape = {heads, rows, rows};
    SmallVector<Value> scoreDyn =
        type.isDynamicDim(0) ? SmallVector<Value>{n, n} : SmallVector<Value>{};
    SmallVector<int64_t> rowShape = {heads, rows};
    SmallVector<Value> rowDyn =
        type.isDynamicDim(0) ? SmallVector<Value>{n} : SmallVector<Value>{};

    // scores[h, i, j] = q[i, h, :] . k[j, h, :]; loops (h, i, j, c).
    Value scores =
        kb.generic({q, k}, kb.zeros(scoreShape, kb.f32, scoreDyn),
                   {kb.map(4, {1, 0, 3}), kb.map(4, {2, 0, 3}),
                    kb.map(4, {0, 1, 2})},
                   {kPar, kPar, kPar, kRed},
                   [](OpBuilder &b, Location loc, ValueRange args) {
                     Value product =
                         arith::MulFOp::create(b, loc, args[0], args[1]);
                     return SmallVector<Value>{
                         arith::AddFOp::create(b, loc, args[2], product)};
                   })
            .front();
    // Scale and mask: key j is visible from query i in the same sequence at
    // an earlier or equal position.
    Value scale = kb.f32Const(op.getScale().convertToDouble());
    Value minusInf = kb.f32Const(-std::numeric_limits<double>::infinity());
    Value positions = op.getPositions(), sequences = op.getSequenceIds();
    Value masked =
        kb.generic({scores, positions, positions, sequences, sequences},
                   kb.empty(scoreShape, kb.f32, scoreDyn),
                   {kb.identity(3), kb.map(3, {1}), kb.map(3, {2}),
                    kb.map(3, {1}), kb.map(3, {2}), kb.identity(3)},
                   {kPar, kPar, kPar},
                   [&](OpBuilder &b, Location loc, ValueRange args) {
                     Value sameSequence = arith::CmpIOp::create(
                         b, loc, arith::CmpIPredicate::eq, args[3], args[4]);
                     Value notLater = arith::CmpIOp::create(
                         b, loc, arith::CmpIPredicate::sle, args[2], args[1]);
                     Value visible =
                         arith::AndIOp::create(b, loc, sameSequence, notLater);
                     Value scaled =
                         arith::MulFOp::create(b, loc, args[0], scale);
                     return SmallVector<Value>{arith::SelectOp::create(
                         b, loc, visible, scaled, minusInf)};
                   })
            .front();
    // Softmax over j. Every row sees at least its own key, so the max is
    // finite.
    Value rowMax =
        kb.generic({masked}, kb.filled(rowShape, kb.f32, minusInf, rowDyn),
                   {kb.identity(3), kb.map(3, {0, 1})}, {kPar, kPar, kRed},
                   [](OpBuilder &b, Location loc, ValueRange args) {
                     return SmallVector<Value>{
                         arith::MaximumFOp::create(b, loc, args[0], args[1])};
                   })
            .front();
    Value exps =
        kb.generic(
              {masked, rowMax}, kb.empty(scoreShape, kb.f32, scoreDyn),
              {kb.identity(3), kb.map(3, {0, 1}), kb.identity(3)},
              {kPar, kPar, kPar},
              [](OpBuilder &b, Location loc, ValueRange args) {
                Value shifted = arith::SubFOp::create(b, loc, args[0], args[1]);
                return SmallVector<Value>{math::ExpOp::create(b, loc, shifted)};
              })
            .front();
    Value rowSum =
        kb.generic({exps}, kb.zeros(rowShape, kb.f32, rowDyn),
                   {kb.identity(3), kb.map(3, {0, 1})}, {kPar, kPar, kRed},
                   [](OpBuilder &b, Location loc, ValueRange args) {
                     return SmallVector<Value>{
                         arith::AddFOp::create(b, loc, args[0], args[1])};
                   })
            .front();
    Value probabilities =
        kb.generic({exps, rowSum}, kb.empty(scoreShape, kb.f32, scoreDyn),
                   {kb.identity(3), kb.map(3, {0, 1}), kb.identity(3)},
                   {kPar, kPar, kPar},
                   [](OpBuilder &b, Location loc, ValueRange args) {
                     return SmallVector<Value>{
                         arith::DivFOp::create(b, loc, args[0], args[1])};
                   })
            .front();
    // out[i, h, c] = sum_j p[h, i, j] v[j, h, c]; loops (i, h, c, j).
    auto splitType = cast<RankedTensorType>(q.getType());
    Value out =
        kb.generic({probabilities, v},
                   kb.zeros(splitType.getShape(), kb.f32, rowDyn),
                   {kb.map(4, {1, 0, 3}), kb.map(4, {3, 1, 2}),
                    kb.map(4, {0, 1, 2})},
                   {kPar, kPar, kPar, kRed},
                   [](OpBuilder &b, Location loc, ValueRange args) {
                     Value product =
                         arith::MulFOp::create(b, loc, args[0], args[1]);
                     return SmallVector<Value>{
                         arith::AddFOp::create(b, loc, args[2], product)};
                   })
            .front();
    rewriter.replaceOp(op, kb.joinHeads(out, type));
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

//===----------------------------------------------------------------------===//
// Routing
//===----------------------------------------------------------------------===//

struct LowerRouter : OpRewritePattern<moma::RouterOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::RouterOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    Value logits = kb.contractTransposed(op.getInput(), op.getWeight());
    rewriter.replaceOp(
        op,
        kb.elementwise({logits}, kb.f32,
                       [](OpBuilder &b, Location loc, ValueRange args) {
                         return SmallVector<Value>{sigmoid(b, loc, args[0])};
                       }));
    return success();
  }
};

struct LowerAuxRouter : OpRewritePattern<moma::AuxRouterOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::AuxRouterOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    Value hidden =
        kb.elementwise({kb.contractTransposed(op.getInput(), op.getW1())},
                       kb.f32, [](OpBuilder &b, Location loc, ValueRange args) {
                         return SmallVector<Value>{silu(b, loc, args[0])};
                       });
    Value logits = kb.contractTransposed(hidden, op.getW2());
    rewriter.replaceOp(
        op,
        kb.elementwise({logits}, kb.f32,
                       [](OpBuilder &b, Location loc, ValueRange args) {
                         return SmallVector<Value>{sigmoid(b, loc, args[0])};
                       }));
    return success();
  }
};

struct LowerModalityPartition : OpRewritePattern<moma::ModalityPartitionOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::ModalityPartitionOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    Value ids = op.getTokenIds();
    Value n = kb.dim(ids, 0);
    SmallVector<Value> results;
    for (auto [g, rangeList] : llvm::enumerate(op.getGroupRanges())) {
      ArrayRef<int64_t> bounds =
          cast<DenseI64ArrayAttr>(rangeList).asArrayRef();
      auto member = [&](OpBuilder &b, Location loc, Value i) {
        Value id = tensor::ExtractOp::create(b, loc, ids, ValueRange{i});
        return inRanges(b, loc, id, bounds);
      };
      // Count the group's tokens, then list them in ascending order.
      Value count = kb.loops({n}, {kb.index(0)},
                             [&](OpBuilder &b, Location loc, ValueRange ivs,
                                 ValueRange state) {
                               Value add = arith::SelectOp::create(
                                   b, loc, member(b, loc, ivs[0]),
                                   arith::ConstantIndexOp::create(b, loc, 1),
                                   arith::ConstantIndexOp::create(b, loc, 0));
                               return SmallVector<Value>{arith::AddIOp::create(
                                   b, loc, state[0], add)};
                             })
                        .front();
      auto type = cast<RankedTensorType>(op.getIndices()[g].getType());
      Value list =
          kb.empty(type.getShape(), kb.i32,
                   type.isDynamicDim(0) ? ValueRange{count} : ValueRange{});
      Value filled =
          kb.loops(
                {n}, {list, kb.index(0)},
                [&](OpBuilder &b, Location loc, ValueRange ivs,
                    ValueRange state) {
                  auto branch = scf::IfOp::create(
                      b, loc, member(b, loc, ivs[0]),
                      [&](OpBuilder &tb, Location tl) {
                        Value stored = tensor::InsertOp::create(
                            tb, tl, toI32(tb, tl, ivs[0]), state[0],
                            ValueRange{state[1]});
                        Value next = arith::AddIOp::create(
                            tb, tl, state[1],
                            arith::ConstantIndexOp::create(tb, tl, 1));
                        scf::YieldOp::create(tb, tl, ValueRange{stored, next});
                      },
                      [&](OpBuilder &eb, Location el) {
                        scf::YieldOp::create(eb, el, state);
                      });
                  return SmallVector<Value>(branch.getResults());
                })
              .front();
      results.push_back(filled);
    }
    rewriter.replaceOp(op, results);
    return success();
  }
};

struct LowerExpertChoice : OpRewritePattern<moma::ExpertChoiceOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::ExpertChoiceOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    Value scores = op.getScores();
    auto scoreType = cast<RankedTensorType>(scores.getType());
    int64_t experts = scoreType.getDimSize(1);
    Value n = kb.dim(scores, 0);
    // k = min(n, ceil(c * n / E)).
    Value k = arith::MinUIOp::create(
        rewriter, op.getLoc(), n,
        ceilFraction(kb, n, op.getCapacityFactor().convertToDouble(),
                     double(experts)));
    Value ranks = rankTokens(kb, scores);
    auto indexType = cast<RankedTensorType>(op.getIndices().getType());
    ValueRange kDyn = indexType.isDynamicDim(1) ? ValueRange{k} : ValueRange{};
    Value indices = kb.empty(indexType.getShape(), kb.i32, kDyn);
    Value gates = kb.empty(indexType.getShape(), kb.f32, kDyn);
    // Token i goes to slot rank[e, i] of expert e when that slot is < k.
    SmallVector<Value> chosen = kb.loops(
        {kb.index(experts), n}, {indices, gates},
        [&](OpBuilder &b, Location loc, ValueRange ivs, ValueRange state) {
          Value e = ivs[0], i = ivs[1];
          Value slot = toIndex(
              b, loc,
              tensor::ExtractOp::create(b, loc, ranks, ValueRange{e, i}));
          Value taken =
              arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, slot, k);
          auto branch = scf::IfOp::create(
              b, loc, taken,
              [&](OpBuilder &tb, Location tl) {
                Value gate =
                    tensor::ExtractOp::create(tb, tl, scores, ValueRange{i, e});
                Value newIndices = tensor::InsertOp::create(
                    tb, tl, toI32(tb, tl, i), state[0], ValueRange{e, slot});
                Value newGates = tensor::InsertOp::create(
                    tb, tl, gate, state[1], ValueRange{e, slot});
                scf::YieldOp::create(tb, tl, ValueRange{newIndices, newGates});
              },
              [&](OpBuilder &eb, Location el) {
                scf::YieldOp::create(eb, el, state);
              });
          return SmallVector<Value>(branch.getResults());
        });
    rewriter.replaceOp(op, chosen);
    return success();
  }
};

struct LowerModSelect : OpRewritePattern<moma::ModSelectOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::ModSelectOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    Value scores = op.getScores();
    Value n = kb.dim(scores, 0);
    Value k = ceilFraction(kb, n, op.getCapacity().convertToDouble(), 1.0);
    Value ranks = rankTokens(kb, scores); // [1, N]
    auto type = cast<RankedTensorType>(op.getIndices().getType());
    ValueRange kDyn = type.isDynamicDim(0) ? ValueRange{k} : ValueRange{};
    Value indices = kb.empty(type.getShape(), kb.i32, kDyn);
    Value gates = kb.empty(type.getShape(), kb.f32, kDyn);
    Value zero = kb.index(0);
    // The selected tokens, kept in ascending index order.
    SmallVector<Value> selected = kb.loops(
        {n}, {indices, gates, kb.index(0)},
        [&](OpBuilder &b, Location loc, ValueRange ivs, ValueRange state) {
          Value i = ivs[0];
          Value rank = toIndex(
              b, loc,
              tensor::ExtractOp::create(b, loc, ranks, ValueRange{zero, i}));
          Value taken =
              arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, rank, k);
          auto branch = scf::IfOp::create(
              b, loc, taken,
              [&](OpBuilder &tb, Location tl) {
                Value gate = tensor::ExtractOp::create(tb, tl, scores,
                                                       ValueRange{i, zero});
                Value newIndices = tensor::InsertOp::create(
                    tb, tl, toI32(tb, tl, i), state[0], ValueRange{state[2]});
                Value newGates = tensor::InsertOp::create(
                    tb, tl, gate, state[1], ValueRange{state[2]});
                Value next = arith::AddIOp::create(
                    tb, tl, state[2],
                    arith::ConstantIndexOp::create(tb, tl, 1));
                scf::YieldOp::create(tb, tl,
                                     ValueRange{newIndices, newGates, next});
              },
              [&](OpBuilder &eb, Location el) {
                scf::YieldOp::create(eb, el, state);
              });
          return SmallVector<Value>(branch.getResults());
        });
    rewriter.replaceOp(op, ArrayRef<Value>(selected).take_front(2));
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

//===----------------------------------------------------------------------===//
// Data movement
//===----------------------------------------------------------------------===//

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
                         tensor::ExtractOp::create(b, loc, source, at)};
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

//===----------------------------------------------------------------------===//
// Losses
//===----------------------------------------------------------------------===//

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

Value scalarOf(KernelBuilder &kb, Value tensor0d) {
  return tensor::ExtractOp::create(kb.b, kb.loc, tensor0d, ValueRange{});
}
Value tensorOf(KernelBuilder &kb, Value scalar) {
  return tensor::FromElementsOp::create(
      kb.b, kb.loc, RankedTensorType::get({}, kb.f32), ValueRange{scalar});
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
        kb.generic(
              {logits, rowMax}, kb.zeros(rowShape, kb.f32, rowsDyn),
              {kb.identity(2), kb.map(2, {0}), kb.map(2, {0})}, {kPar, kRed},
              [](OpBuilder &b, Location loc, ValueRange args) {
                Value e = math::ExpOp::create(
                    b, loc, arith::SubFOp::create(b, loc, args[0], args[1]));
                return SmallVector<Value>{
                    arith::AddFOp::create(b, loc, args[2], e)};
              })
            .front();
    // lse and the cross-entropy of each row.
    ValueRange perRow = kb.generic(
        {rowMax, sumExp, targets},
        {kb.empty(rowShape, kb.f32, rowsDyn),
         kb.empty(rowShape, kb.f32, rowsDyn)},
        {kb.identity(1), kb.identity(1), kb.identity(1), kb.identity(1),
         kb.identity(1)},
        {kPar}, [&](OpBuilder &b, Location loc, ValueRange args) {
          Value lse = arith::AddFOp::create(
              b, loc, args[0], math::LogOp::create(b, loc, args[1]));
          Value i = linalg::IndexOp::create(b, loc, 0);
          Value target = tensor::ExtractOp::create(
              b, loc, logits, ValueRange{i, toIndex(b, loc, args[2])});
          return SmallVector<Value>{lse,
                                    arith::SubFOp::create(b, loc, lse, target)};
        });
    Value lse = perRow[0], crossEntropy = perRow[1];
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

struct LowerAuxRouterLoss : OpRewritePattern<moma::AuxRouterLossOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::AuxRouterLossOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    Value predictions = op.getPredictions(), indices = op.getIndices();
    auto type = cast<RankedTensorType>(predictions.getType());
    SmallVector<Value> sizes = kb.dims(predictions);
    Value chosen =
        kb.zeros(type.getShape(), kb.f32, kb.dynamicOf(type.getShape(), sizes));
    // Mark 1 where the batch router chose token i for output e.
    bool perExpert = cast<RankedTensorType>(indices.getType()).getRank() == 2;
    Value one = kb.f32Const(1.0);
    chosen =
        kb.loops(kb.dims(indices), {chosen},
                 [&](OpBuilder &b, Location loc, ValueRange ivs,
                     ValueRange state) {
                   Value row = toIndex(
                       b, loc, tensor::ExtractOp::create(b, loc, indices, ivs));
                   Value column =
                       perExpert ? ivs[0]
                                 : arith::ConstantIndexOp::create(b, loc, 0);
                   return SmallVector<Value>{tensor::InsertOp::create(
                       b, loc, one, state[0], ValueRange{row, column})};
                 })
            .front();
    // Binary cross-entropy with logs clamped at -100, as torch's BCELoss.
    Value sum = kb.zeros({}, kb.f32);
    Value total =
        kb.generic(
              {predictions, chosen}, sum,
              {kb.identity(2), kb.identity(2),
               AffineMap::get(2, 0, {}, rewriter.getContext())},
              {kRed, kRed},
              [](OpBuilder &b, Location loc, ValueRange args) {
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
                return SmallVector<Value>{
                    arith::SubFOp::create(b, loc, args[2], term)};
              })
            .front();
    Value rows = arith::UIToFPOp::create(
        rewriter, op.getLoc(), kb.f32,
        arith::IndexCastUIOp::create(rewriter, op.getLoc(),
                                     rewriter.getI64Type(),
                                     kb.dim(predictions, 0)));
    Value entries = arith::MulFOp::create(
        rewriter, op.getLoc(), rows, kb.f32Const(double(type.getDimSize(1))));
    Value mean = arith::DivFOp::create(rewriter, op.getLoc(),
                                       scalarOf(kb, total), entries);
    rewriter.replaceOp(op, tensorOf(kb, mean));
    return success();
  }
};

struct ConvertMomaToLinalgPass
    : public momac::impl::ConvertMomaToLinalgBase<ConvertMomaToLinalgPass> {
  void runOnOperation() override {
    MLIRContext *context = &getContext();
    RewritePatternSet patterns(context);
    patterns.add<LowerShiftTokens, LowerTokenPositions, LowerEmbed, LowerLinear,
                 LowerRMSNorm, LowerHeadLayerNorm, LowerRope, LowerAttention,
                 LowerSwiGLU, LowerRouter, LowerAuxRouter,
                 LowerModalityPartition, LowerExpertChoice, LowerModSelect,
                 LowerModMerge, LowerGatherTokens, LowerScatterAddTokens,
                 LowerCrossEntropy, LowerAuxRouterLoss>(context);
    ConversionTarget target(*context);
    target.addIllegalDialect<moma::MomaDialect>();
    target.markUnknownOpDynamicallyLegal([](Operation *) { return true; });
    FrozenRewritePatternSet frozen(std::move(patterns));
    if (failed(applyPartialConversion(getOperation(), target, frozen)))
      signalPassFailure();
  }
};

} // namespace
