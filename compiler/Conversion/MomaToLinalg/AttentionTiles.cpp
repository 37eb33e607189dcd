//===- AttentionTiles.cpp - Tiles of the online-softmax attention ---------===//

#include "compiler/Conversion/MomaToLinalg/AttentionTiles.h"
#include "compiler/Conversion/MomaToLinalg/SequenceHelpers.h"

#include "mlir/Dialect/Affine/IR/AffineOps.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

#include <limits>

using namespace mlir;

namespace momac::lowering {

Value blockOf(KernelBuilder &kb, Value x, OpFoldResult row, OpFoldResult rows,
              OpFoldResult col, int64_t cols) {
  SmallVector<OpFoldResult> offsets = {row, col},
                            sizes = {rows, kb.b.getIndexAttr(cols)},
                            strides(2, kb.b.getIndexAttr(1));
  return tensor::ExtractSliceOp::create(kb.b, kb.loc, x, offsets, sizes,
                                        strides);
}

Value rangeOf(KernelBuilder &kb, Value x, OpFoldResult row, OpFoldResult rows) {
  return tensor::ExtractSliceOp::create(
      kb.b, kb.loc, x, ArrayRef<OpFoldResult>{row},
      ArrayRef<OpFoldResult>{rows},
      ArrayRef<OpFoldResult>{kb.b.getIndexAttr(1)});
}

Value columnOf(KernelBuilder &kb, Value x, OpFoldResult row, OpFoldResult rows,
               OpFoldResult col) {
  auto type = RankedTensorType::get(
      {ShapedType::kDynamic},
      cast<RankedTensorType>(x.getType()).getElementType());
  SmallVector<OpFoldResult> offsets = {row, col},
                            sizes = {rows, kb.b.getIndexAttr(1)},
                            strides(2, kb.b.getIndexAttr(1));
  return tensor::ExtractSliceOp::create(kb.b, kb.loc, type, x, offsets, sizes,
                                        strides);
}

Value blockLength(KernelBuilder &kb, Value length, Value block,
                  int64_t blockRows) {
  MLIRContext *context = kb.b.getContext();
  AffineExpr len = getAffineDimExpr(0, context),
             index = getAffineDimExpr(1, context);
  Value remaining = affine::AffineMaxOp::create(
      kb.b, kb.loc,
      AffineMap::get(
          2, 0, {getAffineConstantExpr(0, context), len - index * blockRows},
          context),
      ValueRange{length, block});
  return affine::AffineMinOp::create(
      kb.b, kb.loc,
      AffineMap::get(1, 0, {getAffineConstantExpr(blockRows, context), len},
                     context),
      ValueRange{remaining});
}

Value times(KernelBuilder &kb, Value index, int64_t factor) {
  return arith::MulIOp::create(kb.b, kb.loc, index, kb.index(factor));
}

Value plus(KernelBuilder &kb, Value a, Value b) {
  return arith::AddIOp::create(kb.b, kb.loc, a, b);
}

SmallVector<Value>
forLoop(KernelBuilder &kb, Value lower, Value upper, ValueRange init,
        function_ref<SmallVector<Value>(Value, ValueRange)> body) {
  auto loop = scf::ForOp::create(
      kb.b, kb.loc, lower, upper, kb.index(1), init,
      [&](OpBuilder &nested, Location, Value iv, ValueRange state) {
        OpBuilder::InsertionGuard guard(kb.b);
        kb.b.setInsertionPoint(nested.getInsertionBlock(),
                               nested.getInsertionPoint());
        scf::YieldOp::create(kb.b, kb.loc, body(iv, state));
      });
  return SmallVector<Value>(loop.getResults());
}

Value matrixInit(KernelBuilder &kb, Value rows, Value cols, bool zero) {
  SmallVector<int64_t> shape = {ShapedType::kDynamic, ShapedType::kDynamic};
  return zero ? kb.zeros(shape, kb.f32, {rows, cols})
              : kb.empty(shape, kb.f32, {rows, cols});
}

Value vectorInit(KernelBuilder &kb, Value rows) {
  return kb.empty({ShapedType::kDynamic}, kb.f32, {rows});
}

Value maskedScores(KernelBuilder &kb, Value q, Value k, Value queryPositions,
                   Value keyPositions, double scale) {
  Value queries = kb.dim(q, 0), keys = kb.dim(k, 0);
  // s[i, j] = sum_c q[i, c] k[j, c]; loops (i, j, c).
  Value scores =
      kb.contract(q, k, matrixInit(kb, queries, keys, /*zero=*/true),
                  {kb.map(3, {0, 2}), kb.map(3, {1, 2}), kb.map(3, {0, 1})});
  Value scaleValue = kb.f32Const(scale);
  Value minusInf = kb.f32Const(-std::numeric_limits<double>::infinity());
  return kb
      .generic({scores, queryPositions, keyPositions},
               matrixInit(kb, queries, keys, /*zero=*/false),
               {kb.identity(2), kb.map(2, {0}), kb.map(2, {1}), kb.identity(2)},
               {kPar, kPar},
               [&](OpBuilder &b, Location loc, ValueRange args) {
                 Value visible = arith::CmpIOp::create(
                     b, loc, arith::CmpIPredicate::sle, args[2], args[1]);
                 Value scaled =
                     arith::MulFOp::create(b, loc, args[0], scaleValue);
                 return SmallVector<Value>{arith::SelectOp::create(
                     b, loc, visible, scaled, minusInf)};
               })
      .front();
}

KeyBlock keyBlockOf(KernelBuilder &kb, const QueryBlock &block, Value index,
                    Value k, Value v, Value positions, int64_t headDim,
                    int64_t blockRows) {
  Value row = plus(kb, block.sequenceStart, times(kb, index, blockRows));
  Value seen = arith::SubIOp::create(
      kb.b, kb.loc, plus(kb, block.row, block.rows), block.sequenceStart);
  Value rows = blockLength(kb, seen, index, blockRows);
  return {row, rows, blockOf(kb, k, row, rows, block.col, headDim),
          blockOf(kb, v, row, rows, block.col, headDim),
          rangeOf(kb, positions, row, rows)};
}

Value visibleKeyBlocks(KernelBuilder &kb, const QueryBlock &block,
                       Value index) {
  Value nonEmpty = arith::CmpIOp::create(
      kb.b, kb.loc, arith::CmpIPredicate::ugt, block.rows, kb.index(0));
  return arith::SelectOp::create(kb.b, kb.loc, nonEmpty,
                                 plus(kb, index, kb.index(1)), kb.index(0));
}

Value probabilities(KernelBuilder &kb, Value t, Value logSumExp) {
  return kb
      .generic({t, logSumExp},
               matrixInit(kb, kb.dim(t, 0), kb.dim(t, 1), /*zero=*/false),
               {kb.identity(2), kb.map(2, {0}), kb.identity(2)}, {kPar, kPar},
               [](OpBuilder &b, Location loc, ValueRange args) {
                 return SmallVector<Value>{math::ExpOp::create(
                     b, loc, arith::SubFOp::create(b, loc, args[0], args[1]))};
               })
      .front();
}

Value outputGradScores(KernelBuilder &kb, Value outputGrad, Value value) {
  return kb.contract(outputGrad, value,
                     matrixInit(kb, kb.dim(outputGrad, 0), kb.dim(value, 0),
                                /*zero=*/true),
                     {kb.map(3, {0, 2}), kb.map(3, {1, 2}), kb.map(3, {0, 1})});
}

Value rowLogSumExp(KernelBuilder &kb, const QueryBlock &block, Value keyBlocks,
                   Value query, Value queryPositions, Value k, Value v,
                   Value positions, int64_t headDim, int64_t blockRows,
                   double scale) {
  OpBuilder &b = kb.b;
  Location loc = kb.loc;
  Value minusInf = kb.f32Const(-std::numeric_limits<double>::infinity());
  auto filledVector = [&](Value value) {
    return linalg::FillOp::create(b, loc, ValueRange{value},
                                  ValueRange{vectorInit(kb, block.rows)})
        .getResult(0);
  };
  SmallVector<Value> state = forLoop(
      kb, kb.index(0), keyBlocks,
      {filledVector(minusInf), filledVector(kb.f32Const(0.0))},
      [&](Value keyBlock, ValueRange state) -> SmallVector<Value> {
        KeyBlock keys = keyBlockOf(kb, block, keyBlock, k, v, positions,
                                   headDim, blockRows);
        Value t = maskedScores(kb, query, keys.key, queryPositions,
                               keys.positions, scale);
        Value tileMaximum =
            kb.generic({t}, filledVector(minusInf),
                       {kb.identity(2), kb.map(2, {0})}, {kPar, kRed},
                       [](OpBuilder &b, Location loc, ValueRange args) {
                         return SmallVector<Value>{arith::MaximumFOp::create(
                             b, loc, args[0], args[1])};
                       })
                .front();
        // In place: m' = max(m, rowmax t), l = l exp(m - m'). The first key
        // block holds the sequence's first token, which every query sees,
        // so m' is finite from then on.
        ValueRange rescaled = kb.generic(
            {tileMaximum}, {state[0], state[1]},
            SmallVector<AffineMap>(3, kb.identity(1)), {kPar},
            [](OpBuilder &b, Location loc, ValueRange args) {
              Value maximum =
                  arith::MaximumFOp::create(b, loc, args[1], args[0]);
              Value factor = math::ExpOp::create(
                  b, loc, arith::SubFOp::create(b, loc, args[1], maximum));
              return SmallVector<Value>{
                  maximum, arith::MulFOp::create(b, loc, args[2], factor)};
            });
        Value maximum = rescaled[0];
        // l += sum_j exp(t - m').
        Value sum =
            kb.generic({t, maximum}, rescaled[1],
                       {kb.identity(2), kb.map(2, {0}), kb.map(2, {0})},
                       {kPar, kRed},
                       [](OpBuilder &b, Location loc, ValueRange args) {
                         Value e = math::ExpOp::create(
                             b, loc,
                             arith::SubFOp::create(b, loc, args[0], args[1]));
                         return SmallVector<Value>{
                             arith::AddFOp::create(b, loc, args[2], e)};
                       })
                .front();
        return {maximum, sum};
      });
  return kb
      .generic({state[0], state[1]}, vectorInit(kb, block.rows),
               SmallVector<AffineMap>(3, kb.identity(1)), {kPar},
               [](OpBuilder &b, Location loc, ValueRange args) {
                 return SmallVector<Value>{arith::AddFOp::create(
                     b, loc, args[0], math::LogOp::create(b, loc, args[1]))};
               })
      .front();
}

SmallVector<Value> forEachQueryBlock(
    KernelBuilder &kb, Value sequenceIds, ValueRange outputs, int64_t heads,
    int64_t headDim, int64_t maxRows, int64_t maxSequences, int64_t blockRows,
    function_ref<SmallVector<TileWrite>(const QueryBlock &, Value, ValueRange)>
        body) {
  OpBuilder &b = kb.b;
  Location loc = kb.loc;
  // Query blocks per sequence: by seq_len when known, else by the batch.
  OpFoldResult queryBlocks =
      maxRows > 0
          ? OpFoldResult(b.getIndexAttr(llvm::divideCeil(maxRows, blockRows)))
          : OpFoldResult(arith::CeilDivUIOp::create(b, loc,
                                                    kb.dim(sequenceIds, 0),
                                                    kb.index(blockRows))
                             .getResult());
  auto forall = scf::ForallOp::create(
      b, loc,
      ArrayRef<OpFoldResult>{OpFoldResult(sequenceCount(kb, sequenceIds,
                                                        maxSequences)),
                             b.getIndexAttr(heads), queryBlocks},
      outputs, std::nullopt);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPoint(forall.getTerminator());
  ValueRange ivs = forall.getInductionVars();
  SequenceRows sequence = rowsOfSequence(kb, sequenceIds, ivs[0], maxRows);
  Value offset = times(kb, ivs[2], blockRows);
  QueryBlock block{sequence.start, plus(kb, sequence.start, offset),
                   blockLength(kb, sequence.length, ivs[2], blockRows), ivs[1],
                   times(kb, ivs[1], headDim)};
  SmallVector<TileWrite> writes =
      body(block, ivs[2], forall.getRegionIterArgs());
  b.setInsertionPointToStart(forall.getTerminator().getBody());
  for (auto [write, shared] : llvm::zip(writes, forall.getRegionIterArgs())) {
    SmallVector<OpFoldResult> offsets = {block.row, write.col},
                              sizes = {block.rows,
                                       b.getIndexAttr(
                                           std::max<int64_t>(write.cols, 1))},
                              strides(2, b.getIndexAttr(1));
    tensor::ParallelInsertSliceOp::create(b, loc, write.tile, shared, offsets,
                                          sizes, strides);
  }
  return SmallVector<Value>(forall.getResults());
}

} // namespace momac::lowering
