//===- RoutingHelpers.cpp - Padding and top-k selection -------------------===//

#include "compiler/Conversion/MomaToLinalg/RoutingHelpers.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

using namespace mlir;

namespace momac::lowering {

Value extractRow(OpBuilder &b, Location loc, Value source,
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

Value validCount(OpBuilder &b, Location loc, Value valid) {
  return toIndex(b, loc,
                 tensor::ExtractOp::create(
                     b, loc, valid,
                     ValueRange{arith::ConstantIndexOp::create(b, loc, 0)}));
}

Value isRowValid(OpBuilder &b, Location loc, Value row, Value valid) {
  return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, row,
                               validCount(b, loc, valid));
}

Value selectionKeys(KernelBuilder &kb, Value scores,
                    Value valid) {
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

Value tokenOfKey(OpBuilder &b, Location loc, Value key) {
  Value mask = arith::ConstantOp::create(
      b, loc, b.getI64IntegerAttr((int64_t(1) << kSelectionIndexBits) - 1));
  return arith::IndexCastUIOp::create(b, loc, b.getIndexType(),
                                      arith::AndIOp::create(b, loc, key, mask));
}

Value selectSmallestKeys(KernelBuilder &kb, Value keys, Value k) {
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

Value ceilFraction(OpBuilder &b, Location loc, Value count,
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
Value ceilFraction(KernelBuilder &kb, Value count, double numerator,
                   double denominator) {
  return ceilFraction(kb.b, kb.loc, count, numerator, denominator);
}

Value expertCapacity(OpBuilder &b, Location loc, Value n,
                     double capacityFactor, int64_t experts) {
  return arith::MinUIOp::create(
      b, loc, n, ceilFraction(b, loc, n, capacityFactor, double(experts)));
}

} // namespace momac::lowering
