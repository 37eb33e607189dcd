//===- SequenceHelpers.cpp - The rows of each sequence of a batch ---------===//

#include "compiler/Conversion/MomaToLinalg/SequenceHelpers.h"

#include "dialects/moma/IR/MomaOps.h"

#include "mlir/Dialect/Affine/IR/AffineOps.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

using namespace mlir;

namespace momac::lowering {

namespace {

/// The first index i of the nondecreasing i32 vector `ids` with
/// ids[i] >= `value` (an index), by binary search.
Value lowerBound(KernelBuilder &kb, Value ids, Value value) {
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

} // namespace

OpFoldResult sequenceCount(KernelBuilder &kb, Value ids,
                           int64_t maxSequences) {
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

SequenceRows rowsOfSequence(KernelBuilder &kb, Value ids,
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

SmallVector<Value>
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

int64_t maxSequencesOf(Operation *module) {
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

int64_t maxSequenceRowsOf(Operation *module) {
  int64_t rows = 0;
  module->walk([&](moma::TokenPositionsOp op) {
    rows = std::max<int64_t>(rows, op.getSeqLen());
  });
  return rows;
}

} // namespace momac::lowering
