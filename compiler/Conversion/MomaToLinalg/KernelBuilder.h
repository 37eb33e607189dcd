//===- KernelBuilder.h - Building blocks of the moma lowering ---*- C++ -*-===//
//
// Shared by the forward (MomaToLinalg.cpp) and gradient (GradientsToLinalg.cpp)
// patterns: constants, empty and filled tensors, linalg.generic and scf.for
// nests, contractions, and the routing helpers.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_COMPILER_CONVERSION_MOMATOLINALG_KERNELBUILDER_H
#define MOMAC_COMPILER_CONVERSION_MOMATOLINALG_KERNELBUILDER_H

#include "dialects/moma/IR/MomaDialect.h"

#include "mlir/Dialect/Affine/IR/AffineOps.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/PatternMatch.h"

#include <cmath>
#include <limits>

namespace momac::lowering {

using namespace mlir;
using utils::IteratorType;

constexpr IteratorType kPar = IteratorType::parallel;
constexpr IteratorType kRed = IteratorType::reduction;

//===----------------------------------------------------------------------===//
// Building blocks
//===----------------------------------------------------------------------===//

/// The body of a contraction: acc + a * b (arguments a, b, acc). Narrower
/// operands (bf16 GEMM operands) are extended to the accumulator's type
/// first, so the products and the sum are in f32.
inline SmallVector<Value> multiplyAccumulate(OpBuilder &b, Location loc,
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

/// The GEMM operand type the module asks for (moma.gemm_operand_type), f32
/// when it asks none.
inline Type gemmOperandTypeOf(Operation *op) {
  auto module = isa<ModuleOp>(op) ? cast<ModuleOp>(op)
                                  : op->getParentOfType<ModuleOp>();
  if (module)
    if (auto attr = module->getAttrOfType<TypeAttr>(
            moma::kGemmOperandTypeAttrName))
      return attr.getValue();
  return Float32Type::get(op->getContext());
}

/// A small builder for the kernels below: index and float constants, empty
/// and filled tensors, generic ops and loop nests, all at one location.
class KernelBuilder {
public:
  KernelBuilder(PatternRewriter &rewriter, Location loc)
      : b(rewriter), loc(loc), f32(rewriter.getF32Type()),
        i32(rewriter.getI32Type()),
        gemmOperands(
            gemmOperandTypeOf(rewriter.getInsertionBlock()->getParentOp())) {}

  PatternRewriter &b;
  Location loc;
  Type f32, i32;
  /// The element type GEMM operands are rounded to (f32: not rounded).
  Type gemmOperands;

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

  /// A contraction `init += lhs * rhs` over the loops of `maps` (a loop in
  /// the result is parallel, one only in the operands a reduction), as the
  /// named op linalg.contract: every target's library-call mapping reads
  /// its batch, M, N and K loops from the op (linalg::inferContractionDims).
  /// Narrower operands (bf16) are widened to the accumulator's type.
  Value contract(Value lhs, Value rhs, Value init, ArrayRef<AffineMap> maps) {
    return linalg::ContractOp::create(b, loc, TypeRange{init.getType()},
                                      ValueRange{lhs, rhs}, ValueRange{init},
                                      b.getAffineMapArrayAttr(maps))
        .getResult(0);
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

  /// `x` as a GEMM operand: rounded to the module's GEMM operand type (an
  /// element-wise kernel that fusion folds into x's producer), or x itself.
  Value gemmOperand(Value x) {
    if (gemmOperands == f32)
      return x;
    return elementwise({x}, gemmOperands,
                       [&](OpBuilder &nested, Location at, ValueRange args) {
                         return SmallVector<Value>{arith::TruncFOp::create(
                             nested, at, gemmOperands, args[0])};
                       });
  }

  /// op(lhs) op(rhs), where op transposes the last two dimensions when
  /// asked, with an optional leading expert dimension; operands in the
  /// module's GEMM operand type, accumulated in f32.
  Value matmul(Value lhs, Value rhs, bool transposeLhs, bool transposeRhs) {
    Value lhsOperand = gemmOperand(lhs);
    Value rhsOperand = gemmOperand(rhs);
    return matmulOf(lhsOperand, rhsOperand, transposeLhs, transposeRhs);
  }
  /// The same in f32 whatever the GEMM operand type: the routers' logits
  /// and their gradients stay f32 (MODEL_SPEC section 7).
  Value matmulInF32(Value lhs, Value rhs, bool transposeLhs,
                    bool transposeRhs) {
    return matmulOf(lhs, rhs, transposeLhs, transposeRhs);
  }

  Value matmulOf(Value lhs, Value rhs, bool transposeLhs, bool transposeRhs) {
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

  /// x w^T: [.., m, k] x [.., n, k] -> [.., m, n] (linear maps).
  Value contractTransposed(Value x, Value w) {
    return matmul(x, w, false, true);
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

inline Value sigmoid(OpBuilder &b, Location loc, Value x) {
  Value one = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(1.0f));
  Value negated = arith::NegFOp::create(b, loc, x);
  Value denominator =
      arith::AddFOp::create(b, loc, one, math::ExpOp::create(b, loc, negated));
  return arith::DivFOp::create(b, loc, one, denominator);
}

/// sigmoid applied to every element of `x`.
inline Value sigmoidOf(KernelBuilder &kb, Value x) {
  return kb.elementwise({x}, kb.f32,
                        [](OpBuilder &b, Location loc, ValueRange args) {
                          return SmallVector<Value>{sigmoid(b, loc, args[0])};
                        });
}

inline Value silu(OpBuilder &b, Location loc, Value x) {
  return arith::MulFOp::create(b, loc, x, sigmoid(b, loc, x));
}

inline Value toIndex(OpBuilder &b, Location loc, Value i32Value) {
  return arith::IndexCastOp::create(b, loc, b.getIndexType(), i32Value);
}
inline Value toI32(OpBuilder &b, Location loc, Value indexValue) {
  return arith::IndexCastOp::create(b, loc, b.getI32Type(), indexValue);
}

/// True when `id` lies in one of the half-open ranges "lo0, hi0, lo1, ...".
inline Value inRanges(OpBuilder &b, Location loc, Value id,
                      ArrayRef<int64_t> bounds) {
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

//===----------------------------------------------------------------------===//
// Padding (moma.padded_modality_partition and the ops that read its lists)
//===----------------------------------------------------------------------===//

/// Row `at[0]` of `source` at the trailing position `at[1:]`; with
/// `padded`, a row at or past the source's row count is padding and reads
/// zero (its index clamped to row 0 so the read stays in bounds).
inline Value extractRow(OpBuilder &b, Location loc, Value source,
                        ArrayRef<Value> at, bool padded) {
  if (!padded)
    return tensor::ExtractOp::create(b, loc, source, at);
  Value zeroIndex = arith::ConstantIndexOp::create(b, loc, 0);
  Value inside = arith::CmpIOp::create(
      b, loc, arith::CmpIPredicate::ult, at[0],
      tensor::DimOp::create(b, loc, source, 0));
  SmallVector<Value> clamped(at);
  clamped[0] = arith::SelectOp::create(b, loc, inside, at[0], zeroIndex);
  Value value = tensor::ExtractOp::create(b, loc, source, clamped);
  Type element = cast<RankedTensorType>(source.getType()).getElementType();
  Value zero =
      arith::ConstantOp::create(b, loc, cast<TypedAttr>(b.getZeroAttr(element)));
  return arith::SelectOp::create(b, loc, inside, value, zero);
}

/// The one-element i32 count `valid` (how many leading rows are tokens,
/// moma.padded_modality_partition), as index. On a GPU the count lives in
/// device memory: read it where it is used (in a kernel, or in the scalar
/// code that consumes it), not in host code that feeds a later kernel.
inline Value validCount(OpBuilder &b, Location loc, Value valid) {
  return toIndex(b, loc,
                 tensor::ExtractOp::create(
                     b, loc, valid,
                     ValueRange{arith::ConstantIndexOp::create(b, loc, 0)}));
}

/// Whether `row` (index) lies before the count `valid`: a token, not
/// padding.
inline Value isRowValid(OpBuilder &b, Location loc, Value row, Value valid) {
  return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, row,
                               validCount(b, loc, valid));
}

//===----------------------------------------------------------------------===//
// Top-k selection (expert choice and MoD)
//===----------------------------------------------------------------------===//

/// The name of the runtime's selection routine (runtime/device/cpu/Select.h):
///   void momart_select_smallest_i64(int64_t *keys, int64_t rows,
///                                   int64_t cols, int64_t k)
/// moves the k smallest keys of each row to the row's front, ascending.
/// Every target's runtime provides it (CPU: std::nth_element + std::sort).
constexpr llvm::StringLiteral kSelectSmallestFn = "momart_select_smallest_i64";

/// The token index stored in the low bits of a selection key.
constexpr int64_t kSelectionIndexBits = 31;

/// key[e, i] for scores [n, E] -> [E, n] i64: ascending keys are descending
/// scores with ties to the lower index (MODEL_SPEC sections 4 and 5), so the
/// k smallest keys of row e are expert e's top k. The key is the score's
/// bits mapped to an order-preserving unsigned integer and complemented
/// (descending), shifted above the 31-bit token index (B * S fits i32).
/// The order is total: -0 counts as +0, and NaN sorts after every number
/// (a token scored NaN is chosen last, never out of range).
/// With `valid` (a one-element i32 count), rows at or past valid[0] are
/// padding: their keys take the largest score part, so they sort after
/// every token, NaN scores included (those tie, and go by index).
inline Value selectionKeys(KernelBuilder &kb, Value scores,
                           Value valid = Value()) {
  auto type = cast<RankedTensorType>(scores.getType());
  int64_t experts = type.getDimSize(1);
  SmallVector<int64_t> shape = {experts, type.getDimSize(0)};
  Value init = kb.empty(shape, kb.b.getI64Type(),
                        type.isDynamicDim(0) ? ValueRange{kb.dim(scores, 0)}
                                             : ValueRange{});
  return kb
      .generic(
          {scores}, init, {kb.map(2, {1, 0}), kb.identity(2)}, {kPar, kPar},
          [&](OpBuilder &b, Location loc, ValueRange args) {
            Type i32 = b.getI32Type(), i64 = b.getI64Type();
            auto i32Const = [&](uint32_t v) -> Value {
              return arith::ConstantOp::create(
                  b, loc, b.getIntegerAttr(i32, int64_t(int32_t(v))));
            };
            Value score = args[0];
            Value zeroF = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0));
            Value isZero = arith::CmpFOp::create(
                b, loc, arith::CmpFPredicate::OEQ, score, zeroF);
            score = arith::SelectOp::create(b, loc, isZero, zeroF, score);
            Value bits = arith::BitcastOp::create(b, loc, i32, score);
            // Ascending order as unsigned: negatives flip every bit, the
            // others set the sign bit. Descending: the complement of that.
            Value negative = arith::CmpIOp::create(
                b, loc, arith::CmpIPredicate::slt, bits, i32Const(0));
            Value ascending = arith::SelectOp::create(
                b, loc, negative,
                arith::XOrIOp::create(b, loc, bits, i32Const(0xFFFFFFFFu)),
                arith::OrIOp::create(b, loc, bits, i32Const(0x80000000u)));
            Value descending =
                arith::XOrIOp::create(b, loc, ascending, i32Const(0xFFFFFFFFu));
            Value isNaN = arith::CmpFOp::create(
                b, loc, arith::CmpFPredicate::UNO, score, score);
            descending = arith::SelectOp::create(
                b, loc, isNaN, i32Const(0xFFFFFFFFu), descending);
            if (valid)
              descending = arith::SelectOp::create(
                  b, loc, isRowValid(b, loc, linalg::IndexOp::create(b, loc, 1),
                                     valid),
                  descending, i32Const(0xFFFFFFFFu));
            Value high = arith::ShLIOp::create(
                b, loc, arith::ExtUIOp::create(b, loc, i64, descending),
                arith::ConstantOp::create(
                    b, loc, b.getI64IntegerAttr(kSelectionIndexBits)));
            Value token = arith::IndexCastUIOp::create(
                b, loc, i64, linalg::IndexOp::create(b, loc, 1));
            return SmallVector<Value>{
                arith::OrIOp::create(b, loc, high, token)};
          })
      .front();
}

/// The token index of a selection key, as index.
inline Value tokenOfKey(OpBuilder &b, Location loc, Value key) {
  Value mask = arith::ConstantOp::create(
      b, loc, b.getI64IntegerAttr((int64_t(1) << kSelectionIndexBits) - 1));
  return arith::IndexCastUIOp::create(b, loc, b.getIndexType(),
                                      arith::AndIOp::create(b, loc, key, mask));
}

/// `keys` [rows, cols] i64 with the k smallest keys of each row moved to its
/// front in ascending order (the rest in no particular order): a call to the
/// runtime's selection routine, O(cols + k log k) per row. The keys are
/// written into a buffer of their own, selected in place and read back as a
/// tensor, so bufferization sees one fresh allocation.
inline Value selectSmallestKeys(KernelBuilder &kb, Value keys, Value k) {
  OpBuilder &b = kb.b;
  Location loc = kb.loc;
  auto type = cast<RankedTensorType>(keys.getType());
  auto bufferType = MemRefType::get(type.getShape(), type.getElementType());
  Value buffer = memref::AllocOp::create(
      b, loc, bufferType, kb.dynamicOf(type.getShape(), kb.dims(keys)));
  bufferization::MaterializeInDestinationOp::create(b, loc, Type(), keys, buffer,
                                                    /*restrict=*/true,
                                                    /*writable=*/true);

  auto module =
      b.getInsertionBlock()->getParentOp()->getParentOfType<ModuleOp>();
  auto ptrType = LLVM::LLVMPointerType::get(b.getContext());
  Type i64 = b.getI64Type();
  auto fnType = b.getFunctionType({ptrType, i64, i64, i64}, {});
  if (!module.lookupSymbol<func::FuncOp>(kSelectSmallestFn)) {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(module.getBody());
    func::FuncOp::create(b, loc, kSelectSmallestFn, fnType).setPrivate();
  }
  Value address = arith::IndexCastOp::create(
      b, loc, i64,
      memref::ExtractAlignedPointerAsIndexOp::create(b, loc, buffer));
  Value pointer = LLVM::IntToPtrOp::create(b, loc, ptrType, address);
  auto asI64 = [&](Value index) -> Value {
    return arith::IndexCastOp::create(b, loc, i64, index);
  };
  func::CallOp::create(b, loc, kSelectSmallestFn, TypeRange{},
                       ValueRange{pointer, asI64(kb.dim(keys, 0)),
                                  asI64(kb.dim(keys, 1)), asI64(k)});
  return bufferization::ToTensorOp::create(b, loc, type, buffer,
                                           /*restrict=*/true,
                                           /*writable=*/true);
}

/// ceil(fraction * count) in IEEE double, as an index (MODEL_SPEC 4 and 5).
inline Value ceilFraction(OpBuilder &b, Location loc, Value count,
                          double numerator, double denominator) {
  Value asInt = arith::IndexCastUIOp::create(b, loc, b.getI64Type(), count);
  Value asDouble = arith::UIToFPOp::create(b, loc, b.getF64Type(), asInt);
  Value scaled = arith::MulFOp::create(
      b, loc, arith::ConstantOp::create(b, loc, b.getF64FloatAttr(numerator)),
      asDouble);
  Value divided = arith::DivFOp::create(
      b, loc, scaled,
      arith::ConstantOp::create(b, loc, b.getF64FloatAttr(denominator)));
  Value ceiled = math::CeilOp::create(b, loc, divided);
  Value back = arith::FPToUIOp::create(b, loc, b.getI64Type(), ceiled);
  return arith::IndexCastUIOp::create(b, loc, b.getIndexType(), back);
}
inline Value ceilFraction(KernelBuilder &kb, Value count, double numerator,
                          double denominator) {
  return ceilFraction(kb.b, kb.loc, count, numerator, denominator);
}

/// Expert choice's k = min(n, ceil(c * n / E)) for n tokens (MODEL_SPEC
/// section 4), as an index.
inline Value expertCapacity(OpBuilder &b, Location loc, Value n,
                            double capacityFactor, int64_t experts) {
  return arith::MinUIOp::create(
      b, loc, n, ceilFraction(b, loc, n, capacityFactor, double(experts)));
}

/// Row statistics shared by the norms' forward and gradient kernels, so that
/// both compute them with the same operations in the same order.

/// r[i] = 1 / sqrt(mean_c x[i, c]^2 + eps) for x [n, d]: RMSNorm's scale.
inline Value rowInverseRms(KernelBuilder &kb, Value x, double eps) {
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
inline Value
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
inline std::pair<Value, Value> headStatistics(KernelBuilder &kb, Value x,
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

/// The first index i of the nondecreasing i32 vector `ids` with
/// ids[i] >= `value` (an index), by binary search.
inline Value lowerBound(KernelBuilder &kb, Value ids, Value value) {
  OpBuilder &b = kb.b;
  Location loc = kb.loc;
  Value target = toI32(b, loc, value);
  Type indexType = b.getIndexType();
  auto search = scf::WhileOp::create(
      b, loc, TypeRange{indexType, indexType},
      ValueRange{kb.index(0), kb.dim(ids, 0)},
      [](OpBuilder &b, Location loc, ValueRange range) {
        Value open = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult,
                                           range[0], range[1]);
        scf::ConditionOp::create(b, loc, open, range);
      },
      [&](OpBuilder &b, Location loc, ValueRange range) {
        Value one = arith::ConstantIndexOp::create(b, loc, 1);
        Value mid = arith::ShRUIOp::create(
            b, loc, arith::AddIOp::create(b, loc, range[0], range[1]), one);
        Value id = tensor::ExtractOp::create(b, loc, ids, ValueRange{mid});
        Value below = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt,
                                            id, target);
        Value next = arith::AddIOp::create(b, loc, mid, one);
        scf::YieldOp::create(
            b, loc,
            ValueRange{arith::SelectOp::create(b, loc, below, next, range[0]),
                       arith::SelectOp::create(b, loc, below, range[1], mid)});
      });
  return search.getResult(0);
}

/// The number of sequences of nondecreasing `ids`: ids[n - 1] + 1, or 0
/// when there are no rows. With `maxSequences` > 0, a bound on every id + 1
/// (the batch's sequences, maxSequencesOf), that bound instead: a sequence
/// past the last id gets no rows and costs next to nothing, as one without
/// tokens between others does already (a Mixture-of-Depths layer's), and
/// the count is a constant, which a GPU step need not read back from the
/// device to size its grid.
inline OpFoldResult sequenceCount(KernelBuilder &kb, Value ids,
                                  int64_t maxSequences = 0) {
  if (maxSequences > 0)
    return kb.b.getIndexAttr(maxSequences);
  OpBuilder &b = kb.b;
  Location loc = kb.loc;
  Value rows = kb.dim(ids, 0);
  Value none = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, rows,
                                     kb.index(0));
  auto count = scf::IfOp::create(
      b, loc, none,
      [&](OpBuilder &b, Location loc) {
        scf::YieldOp::create(b, loc, ValueRange{kb.index(0)});
      },
      [&](OpBuilder &b, Location loc) {
        Value last = arith::SubIOp::create(b, loc, rows, kb.index(1));
        Value id = tensor::ExtractOp::create(b, loc, ids, ValueRange{last});
        Value sequences = arith::AddIOp::create(
            b, loc, toIndex(b, loc, id), arith::ConstantIndexOp::create(b, loc, 1));
        scf::YieldOp::create(b, loc, ValueRange{sequences});
      });
  return count.getResult(0);
}

/// Sequence `sequence`'s rows [start, start + length) of nondecreasing
/// `ids`. `maxRows`, when positive, bounds the length in the IR (see
/// forEachSequence).
struct SequenceRows {
  Value start, length;
};
inline SequenceRows rowsOfSequence(KernelBuilder &kb, Value ids,
                                   Value sequence, int64_t maxRows) {
  OpBuilder &b = kb.b;
  Location loc = kb.loc;
  Value start = lowerBound(kb, ids, sequence);
  Value end = lowerBound(
      kb, ids, arith::AddIOp::create(b, loc, sequence, kb.index(1)));
  Value length = arith::SubIOp::create(b, loc, end, start);
  if (maxRows > 0)
    length = affine::AffineMinOp::create(
        b, loc,
        AffineMap::get(1, 0,
                       {b.getAffineDimExpr(0),
                        b.getAffineConstantExpr(maxRows)},
                       b.getContext()),
        ValueRange{length});
  return {start, length};
}

/// Runs `body` once per sequence, in parallel over the sequences: `inputs`
/// are tensors whose row i belongs to sequence ids[i], `body` gets the rows
/// of one sequence ([len, ...] slices of each input) and returns [len, ...]
/// results, which land in the same rows of `outputs`. `ids` must be
/// nondecreasing (tokens in ascending flat order, as every moma op keeps
/// them), so that a sequence's rows are contiguous; sequences without rows
/// get empty slices. Work that only mixes tokens of one sequence (attention)
/// then costs the sum of the squares of the sequence lengths, not the square
/// of the batch.
///
/// `maxRows`, when positive, is a bound on a sequence's rows (seq_len): it
/// changes nothing here but states the bound in the IR, where a target that
/// sizes a sequence's temporaries statically (CUDA's per-block scratch)
/// reads it.
inline SmallVector<Value>
forEachSequence(KernelBuilder &kb, Value ids, ValueRange inputs,
                ValueRange outputs, int64_t maxRows,
                function_ref<SmallVector<Value>(ValueRange)> body) {
  OpBuilder &b = kb.b;
  Location loc = kb.loc;
  auto forall = scf::ForallOp::create(
      b, loc, ArrayRef<OpFoldResult>{OpFoldResult(sequenceCount(kb, ids))},
      outputs, std::nullopt);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPoint(forall.getTerminator());
  SequenceRows rows =
      rowsOfSequence(kb, ids, forall.getInductionVar(0), maxRows);
  Value start = rows.start, length = rows.length;
  // The rows [start, end) of a tensor, every other dimension whole.
  auto rowsOf = [&](Value tensor) {
    auto type = cast<RankedTensorType>(tensor.getType());
    SmallVector<OpFoldResult> offsets(type.getRank(), b.getIndexAttr(0)),
        sizes, strides(type.getRank(), b.getIndexAttr(1));
    offsets[0] = start;
    sizes.push_back(length);
    for (int64_t d = 1; d < type.getRank(); ++d)
      sizes.push_back(b.getIndexAttr(type.getDimSize(d)));
    return std::make_tuple(offsets, sizes, strides);
  };
  SmallVector<Value> slices;
  for (Value input : inputs) {
    auto [offsets, sizes, strides] = rowsOf(input);
    slices.push_back(
        tensor::ExtractSliceOp::create(b, loc, input, offsets, sizes, strides));
  }
  SmallVector<Value> results = body(slices);
  b.setInsertionPointToStart(forall.getTerminator().getBody());
  for (auto [result, shared] :
       llvm::zip(results, forall.getRegionIterArgs())) {
    auto [offsets, sizes, strides] = rowsOf(shared);
    tensor::ParallelInsertSliceOp::create(b, loc, result, shared, offsets,
                                          sizes, strides);
  }
  return SmallVector<Value>(forall.getResults());
}

/// Which keys a query sees: key j is visible from query i iff both are in
/// the same sequence and j's position is not later than i's.
struct AttentionMask {
  Value queryPositions, keyPositions;
  Value querySequences, keySequences;
};

/// Masked softmax attention probabilities p[h, i, j] for per-head q [nq, H,
/// hd] and k [nk, H, hd]. Every query must see at least one key (its own,
/// in self-attention), so the row maximum is finite.
inline Value attentionProbabilities(KernelBuilder &kb, Value q, Value k,
                                    const AttentionMask &mask,
                                    double scaleValue) {
  auto type = cast<RankedTensorType>(q.getType());
  auto keyType = cast<RankedTensorType>(k.getType());
  int64_t heads = type.getDimSize(1);
  SmallVector<int64_t> scoreShape = {heads, type.getDimSize(0),
                                     keyType.getDimSize(0)};
  SmallVector<Value> scoreDyn;
  if (type.isDynamicDim(0))
    scoreDyn.push_back(kb.dim(q, 0));
  if (keyType.isDynamicDim(0))
    scoreDyn.push_back(kb.dim(k, 0));
  SmallVector<int64_t> rowShape = {heads, type.getDimSize(0)};
  SmallVector<Value> rowDyn =
      type.isDynamicDim(0) ? SmallVector<Value>{kb.dim(q, 0)}
                           : SmallVector<Value>{};
  // scores[h, i, j] = q[i, h, :] . k[j, h, :]; loops (h, i, j, c).
  Value scores = kb.contract(kb.gemmOperand(q), kb.gemmOperand(k),
                             kb.zeros(scoreShape, kb.f32, scoreDyn),
                             {kb.map(4, {1, 0, 3}), kb.map(4, {2, 0, 3}),
                              kb.map(4, {0, 1, 2})});
  // Scale and mask: key j is visible from query i in the same sequence at
  // an earlier or equal position.
  Value scale = kb.f32Const(scaleValue);
  Value minusInf = kb.f32Const(-std::numeric_limits<double>::infinity());
  Value masked =
      kb.generic({scores, mask.queryPositions, mask.keyPositions,
                  mask.querySequences, mask.keySequences},
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
                   Value scaled = arith::MulFOp::create(b, loc, args[0], scale);
                   return SmallVector<Value>{arith::SelectOp::create(
                       b, loc, visible, scaled, minusInf)};
                 })
          .front();
  // Softmax over j; every row sees a key, so the max is finite.
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
  return probabilities;
}

/// [n, E] f32: 1 where the batch router chose token i for output e (i among
/// indices[e], or among `indices` for a single output), else 0.
inline Value choiceMask(KernelBuilder &kb, Value predictions, Value indices) {
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
inline Value decisionCount(OpBuilder &b, Location loc, Value predictions,
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
inline Value decisionCount(KernelBuilder &kb, Value predictions,
                           Value valid = Value()) {
  return decisionCount(kb.b, kb.loc, predictions, valid);
}

/// total / count, or 0 when nothing was counted (an empty group: 0, not
/// 0/0).
inline Value meanOrZero(KernelBuilder &kb, Value total, Value count) {
  Value some = arith::CmpFOp::create(kb.b, kb.loc, arith::CmpFPredicate::OGT,
                                     count, kb.f32Const(0.0));
  return arith::SelectOp::create(
      kb.b, kb.loc, some, arith::DivFOp::create(kb.b, kb.loc, total, count),
      kb.f32Const(0.0));
}

/// Whether an auxiliary score routes its token (MODEL_SPEC section 6).
inline Value aboveHalf(OpBuilder &b, Location loc, Value score) {
  return arith::CmpFOp::create(
      b, loc, arith::CmpFPredicate::OGT, score,
      arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0.5f)));
}

/// lse[i] = log(sum_v exp(logits[i, v])), computed stably from the row max.
inline Value rowLogSumExp(KernelBuilder &kb, Value logits) {
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

/// Registers the gradient ops' patterns (GradientsToLinalg.cpp) but
/// attention's.
void populateGradientLoweringPatterns(RewritePatternSet &patterns);

/// Registers moma.attention's and moma.attention_grad's patterns
/// (AttentionToLinalg.cpp): online-softmax kernels per block of
/// `blockRows` query rows. `maxSequenceRows`: seq_len where the module has
/// one (see forEachSequence), else 0; `maxSequences`: the most sequences a
/// batch holds (see sequenceCount), else 0.
void populateAttentionLoweringPatterns(RewritePatternSet &patterns,
                                       int64_t maxSequenceRows,
                                       int64_t maxSequences,
                                       int64_t blockRows);

/// The largest seq_len of the module's moma.token_positions ops, or 0.
int64_t maxSequenceRowsOf(Operation *module);
/// The most sequences a moma.token_positions op of the module numbers
/// (its tokens over seq_len), or 0: a bound on every sequence id + 1.
int64_t maxSequencesOf(Operation *module);

} // namespace momac::lowering

#endif // MOMAC_COMPILER_CONVERSION_MOMATOLINALG_KERNELBUILDER_H
