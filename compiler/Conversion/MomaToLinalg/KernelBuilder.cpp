//===- KernelBuilder.cpp - Building blocks of the moma lowering -----------===//

#include "compiler/Conversion/MomaToLinalg/KernelBuilder.h"

#include "dialects/moma/IR/MomaDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

using namespace mlir;
using mlir::utils::IteratorType;

namespace momac::lowering {

namespace {

ModuleOp moduleOf(Operation *op) {
  return isa<ModuleOp>(op) ? cast<ModuleOp>(op)
                           : op->getParentOfType<ModuleOp>();
}

/// The GEMM operand type the module asks for (moma.gemm_operand_type), f32
/// when it asks none.
Type gemmOperandTypeOf(Operation *op) {
  if (ModuleOp module = moduleOf(op))
    if (auto attr = module->getAttrOfType<TypeAttr>(
            moma::kGemmOperandTypeAttrName))
      return attr.getValue();
  return Float32Type::get(op->getContext());
}

bool gemmOperandsInF32Of(Operation *op) {
  ModuleOp module = moduleOf(op);
  return module && module->hasAttr(moma::kGemmOperandsInF32AttrName);
}

} // namespace

SmallVector<Value> multiplyAccumulate(OpBuilder &b, Location loc,
                                      ValueRange args) {
  Type accumulator = args[2].getType();
  auto widen = [&](Value v) -> Value {
    return v.getType() == accumulator
               ? v
               : arith::ExtFOp::create(b, loc, accumulator, v).getResult();
  };
  Value product = arith::MulFOp::create(b, loc, widen(args[0]), widen(args[1]));
  return SmallVector<Value>{arith::AddFOp::create(b, loc, args[2], product)};
}

KernelBuilder::KernelBuilder(PatternRewriter &rewriter, Location loc)
    : b(rewriter), loc(loc), f32(rewriter.getF32Type()),
      i32(rewriter.getI32Type()),
      gemmOperands(
          gemmOperandTypeOf(rewriter.getInsertionBlock()->getParentOp())),
      gemmOperandsInF32(
          gemmOperandsInF32Of(rewriter.getInsertionBlock()->getParentOp())) {}

Value KernelBuilder::index(int64_t value) {
  return arith::ConstantIndexOp::create(b, loc, value);
}

Value KernelBuilder::f32Const(double value) {
  return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(value));
}

Value KernelBuilder::f64Const(double value) {
  return arith::ConstantOp::create(b, loc, b.getF64FloatAttr(value));
}

Value KernelBuilder::i32Const(int32_t value) {
  return arith::ConstantOp::create(b, loc, b.getI32IntegerAttr(value));
}

Value KernelBuilder::dim(Value tensor, int64_t d) {
  return tensor::DimOp::create(b, loc, tensor, d);
}

SmallVector<Value> KernelBuilder::dynamicOf(ArrayRef<int64_t> shape,
                                            ValueRange sizes) {
  SmallVector<Value> dynamic;
  for (auto [extent, size] : llvm::zip(shape, sizes))
    if (ShapedType::isDynamic(extent))
      dynamic.push_back(size);
  return dynamic;
}

Value KernelBuilder::empty(ArrayRef<int64_t> shape, Type element,
                           ValueRange dynamic) {
  return tensor::EmptyOp::create(b, loc, shape, element, dynamic);
}

Value KernelBuilder::filled(ArrayRef<int64_t> shape, Type element, Value value,
                            ValueRange dynamic) {
  Value init = empty(shape, element, dynamic);
  return linalg::FillOp::create(b, loc, ValueRange{value}, ValueRange{init})
      .getResult(0);
}

Value KernelBuilder::zeros(ArrayRef<int64_t> shape, Type element,
                           ValueRange dynamic) {
  Value zero = arith::ConstantOp::create(b, loc, b.getZeroAttr(element));
  return filled(shape, element, zero, dynamic);
}

AffineMap KernelBuilder::map(unsigned numDims, ArrayRef<unsigned> results) {
  SmallVector<AffineExpr> exprs;
  for (unsigned r : results)
    exprs.push_back(b.getAffineDimExpr(r));
  return AffineMap::get(numDims, 0, exprs, b.getContext());
}

AffineMap KernelBuilder::identity(unsigned numDims) {
  return b.getMultiDimIdentityMap(numDims);
}

ValueRange KernelBuilder::generic(ValueRange inputs, ValueRange outputs,
                                  ArrayRef<AffineMap> maps,
                                  ArrayRef<IteratorType> iterators, Body body) {
  auto op = linalg::GenericOp::create(
      b, loc, ValueRange(outputs).getTypes(), inputs, outputs, maps,
      iterators, [&](OpBuilder &nested, Location at, ValueRange args) {
        linalg::YieldOp::create(nested, at, body(nested, at, args));
      });
  return op.getResults();
}

Value KernelBuilder::contract(Value lhs, Value rhs, Value init,
                              ArrayRef<AffineMap> maps) {
  return linalg::ContractOp::create(b, loc, TypeRange{init.getType()},
                                    ValueRange{lhs, rhs}, ValueRange{init},
                                    b.getAffineMapArrayAttr(maps))
      .getResult(0);
}

Value KernelBuilder::elementwise(ValueRange inputs, Type element, Body body) {
  auto type = cast<RankedTensorType>(inputs.front().getType());
  SmallVector<Value> sizes = dims(inputs.front());
  Value init =
      empty(type.getShape(), element, dynamicOf(type.getShape(), sizes));
  SmallVector<AffineMap> maps(inputs.size() + 1, identity(type.getRank()));
  SmallVector<IteratorType> iterators(type.getRank(), kPar);
  return generic(inputs, init, maps, iterators, body).front();
}

SmallVector<Value> KernelBuilder::dims(Value tensor) {
  SmallVector<Value> sizes;
  auto type = cast<RankedTensorType>(tensor.getType());
  for (int64_t d = 0; d < type.getRank(); ++d)
    sizes.push_back(type.isDynamicDim(d) ? dim(tensor, d)
                                         : index(type.getDimSize(d)));
  return sizes;
}

SmallVector<Value>
KernelBuilder::loops(ValueRange upper, ValueRange state,
                     function_ref<SmallVector<Value>(OpBuilder &, Location,
                                                     ValueRange, ValueRange)>
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

Value KernelBuilder::gemmOperand(Value x) {
  if (gemmOperands == f32)
    return x;
  Type stored = gemmOperandsInF32 ? f32 : gemmOperands;
  return elementwise({x}, stored,
                     [&](OpBuilder &nested, Location at, ValueRange args) {
                       Value rounded = arith::TruncFOp::create(
                           nested, at, gemmOperands, args[0]);
                       if (gemmOperandsInF32)
                         rounded =
                             arith::ExtFOp::create(nested, at, f32, rounded);
                       return SmallVector<Value>{rounded};
                     });
}

Value KernelBuilder::matmul(Value lhs, Value rhs, bool transposeLhs,
                            bool transposeRhs) {
  Value lhsOperand = gemmOperand(lhs);
  Value rhsOperand = gemmOperand(rhs);
  return matmulOf(lhsOperand, rhsOperand, transposeLhs, transposeRhs);
}

Value KernelBuilder::matmulInF32(Value lhs, Value rhs, bool transposeLhs,
                                 bool transposeRhs) {
  return matmulOf(lhs, rhs, transposeLhs, transposeRhs);
}

Value KernelBuilder::matmulOf(Value lhs, Value rhs, bool transposeLhs,
                              bool transposeRhs) {
  auto lhsType = cast<RankedTensorType>(lhs.getType());
  auto rhsType = cast<RankedTensorType>(rhs.getType());
  int64_t rank = lhsType.getRank();
  int64_t rowDim = transposeLhs ? rank - 1 : rank - 2;
  int64_t colDim = transposeRhs ? rank - 2 : rank - 1;
  SmallVector<int64_t> shape;
  SmallVector<Value> sizes;
  if (rank == 3) {
    shape.push_back(lhsType.getDimSize(0));
    sizes.push_back(dim(lhs, 0));
  }
  shape.push_back(lhsType.getDimSize(rowDim));
  sizes.push_back(dim(lhs, rowDim));
  shape.push_back(rhsType.getDimSize(colDim));
  sizes.push_back(dim(rhs, colDim));
  Value init = zeros(shape, f32, dynamicOf(shape, sizes));
  // Loops: [e,] m, n, k.
  unsigned o = rank - 2, numLoops = rank + 1;
  SmallVector<unsigned> prefix;
  if (rank == 3)
    prefix.push_back(0);
  auto with = [&](std::initializer_list<unsigned> dims) {
    SmallVector<unsigned> all(prefix);
    all.append(dims.begin(), dims.end());
    return map(numLoops, all);
  };
  unsigned m = o, n = o + 1, k = o + 2;
  SmallVector<AffineMap> maps = {transposeLhs ? with({k, m}) : with({m, k}),
                                 transposeRhs ? with({n, k}) : with({k, n}),
                                 with({m, n})};
  return contract(lhs, rhs, init, maps);
}

Value KernelBuilder::contractTransposed(Value x, Value w) {
  return matmul(x, w, false, true);
}

Value KernelBuilder::splitHeads(Value x, int64_t heads) {
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

Value KernelBuilder::joinHeads(Value x, RankedTensorType type) {
  return tensor::CollapseShapeOp::create(
      b, loc, type, x, SmallVector<ReassociationIndices>{{0}, {1, 2}});
}

Value sigmoid(OpBuilder &b, Location loc, Value x) {
  Value one = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(1.0f));
  Value negated = arith::NegFOp::create(b, loc, x);
  Value denominator =
      arith::AddFOp::create(b, loc, one, math::ExpOp::create(b, loc, negated));
  return arith::DivFOp::create(b, loc, one, denominator);
}

Value sigmoidOf(KernelBuilder &kb, Value x) {
  return kb.elementwise({x}, kb.f32,
                        [](OpBuilder &b, Location loc, ValueRange args) {
                          return SmallVector<Value>{sigmoid(b, loc, args[0])};
                        });
}

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

Value silu(OpBuilder &b, Location loc, Value x) {
  return arith::MulFOp::create(b, loc, x, sigmoid(b, loc, x));
}

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

Value toIndex(OpBuilder &b, Location loc, Value i32Value) {
  return arith::IndexCastOp::create(b, loc, b.getIndexType(), i32Value);
}
Value toI32(OpBuilder &b, Location loc, Value indexValue) {
  return arith::IndexCastOp::create(b, loc, b.getI32Type(), indexValue);
}

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

Value scalarOf(KernelBuilder &kb, Value tensor0d) {
  return tensor::ExtractOp::create(kb.b, kb.loc, tensor0d, ValueRange{});
}
Value tensorOf(KernelBuilder &kb, Value scalar) {
  return tensor::FromElementsOp::create(
      kb.b, kb.loc, RankedTensorType::get({}, kb.f32), ValueRange{scalar});
}

SmallVector<Value> rowsOf(KernelBuilder &kb, Value x) {
  auto type = cast<RankedTensorType>(x.getType());
  return type.isDynamicDim(0) ? SmallVector<Value>{kb.dim(x, 0)}
                              : SmallVector<Value>{};
}

} // namespace momac::lowering
