//===- AttentionToLinalg.cpp - Attention as online-softmax block kernels --===//
//
// moma.attention and moma.attention_grad become kernels over blocks of
// `blockRows` query and key rows of one head of one sequence, with an
// online softmax (FlashAttention's recurrence): no [len, len] score matrix
// exists, only [block, block] tiles, and blocks wholly above the causal
// diagonal are never computed.
//
// Within a sequence, tokens are in ascending flat order and so in ascending
// position: key block kb holds only keys later than every query of query
// block qb < kb. The mask inside a tile is still by position, so token
// subsets (Mixture-of-Depths) are exact.
//
// Forward, one parallel iteration per (sequence, head, query block), in
// two sweeps over the key blocks up to the diagonal:
//   statistics:  t = scale q k^T, masked;  m' = max(m, rowmax t);
//                l = l exp(m - m') + rowsum exp(t - m');  m = m'
//                (from m = -inf, l = 0);  lse = m + log l
//   output:      p = exp(t - lse);  out += p v
// The second sweep recomputes q k^T so that the GEMM's operand is the
// normalized p, exactly the softmax MODEL_SPEC section 7 rounds to bf16;
// a one-sweep rescaling of out would round exp(t - m) instead.
//
// Gradient (FlashAttention-2's backward): a first parallel loop over
// (sequence, head, query block) computes lse as above and the softmax
// gradient's row term D = rowsum(p dp) with dp = dout v^T; a second, over
// (sequence, head), walks key blocks and, inside, the query blocks that see
// them:
//   p = exp(scale q k^T - lse) masked;  dv += p^T dout;  dp = dout v^T
//   ds = p (dp - D) scale;  dq += ds k;  dk += ds^T q
// Each (sequence, head) owns its rows of dq, dk and dv, so nothing races.
//
// The GEMMs inside a tile are linalg contractions like every other: the
// CPU target calls BLAS on them, the CUDA target spreads them over a
// block's threads.
//
//===----------------------------------------------------------------------===//

#include "compiler/Conversion/MomaToLinalg/KernelBuilder.h"
#include "dialects/moma/IR/MomaOps.h"

namespace momac::lowering {
namespace {

/// Rows [row, row + rows) and columns [col, col + cols) of matrix `x`.
Value blockOf(KernelBuilder &kb, Value x, OpFoldResult row, OpFoldResult rows,
              OpFoldResult col, int64_t cols) {
  SmallVector<OpFoldResult> offsets = {row, col},
                            sizes = {rows, kb.b.getIndexAttr(cols)},
                            strides(2, kb.b.getIndexAttr(1));
  return tensor::ExtractSliceOp::create(kb.b, kb.loc, x, offsets, sizes,
                                        strides);
}

/// Elements [row, row + rows) of vector `x`.
Value rangeOf(KernelBuilder &kb, Value x, OpFoldResult row, OpFoldResult rows) {
  return tensor::ExtractSliceOp::create(
      kb.b, kb.loc, x, ArrayRef<OpFoldResult>{row},
      ArrayRef<OpFoldResult>{rows},
      ArrayRef<OpFoldResult>{kb.b.getIndexAttr(1)});
}

/// Rows [row, row + rows) of column `col` of matrix `x`, as a vector.
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

/// The rows of block `block` of a `length`-row sequence:
/// min(blockRows, max(0, length - block * blockRows)). The outer min states
/// the block's bound in the IR (CUDA sizes a tile's temporaries by it).
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

/// An scf.for from `lower` to `upper` carrying `init`; `body` gets the
/// induction variable and the state and returns the next state.
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

/// [rows, cols] of f32, dynamic in both.
Value matrixInit(KernelBuilder &kb, Value rows, Value cols, bool zero) {
  SmallVector<int64_t> shape = {ShapedType::kDynamic, ShapedType::kDynamic};
  return zero ? kb.zeros(shape, kb.f32, {rows, cols})
              : kb.empty(shape, kb.f32, {rows, cols});
}
Value vectorInit(KernelBuilder &kb, Value rows) {
  return kb.empty({ShapedType::kDynamic}, kb.f32, {rows});
}

/// One head's tile of scaled, masked scores: t[i, j] = scale q[i] . k[j]
/// where key j's position is not after query i's, else -inf. q [qn, hd] and
/// k [kn, hd] are of one sequence.
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

/// Where one query block and one head of one sequence are: the query rows
/// [row, row + rows) of the flat batch, the sequence's first row, and the
/// head's columns [col, col + headDim).
struct QueryBlock {
  Value sequenceStart, row, rows, head, col;
};

/// The rows of one head in a key block that a query block sees: the
/// sequence's rows from block `index` on, at most blockRows of them, never
/// past the query block's last row.
struct KeyBlock {
  Value row, rows, key, value, positions;
};
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

/// The key blocks query block `index` sees: 0 .. index (keys in later blocks
/// are later tokens); none when the block is empty.
Value visibleKeyBlocks(KernelBuilder &kb, const QueryBlock &block,
                       Value index) {
  Value nonEmpty = arith::CmpIOp::create(
      kb.b, kb.loc, arith::CmpIPredicate::ugt, block.rows, kb.index(0));
  return arith::SelectOp::create(kb.b, kb.loc, nonEmpty,
                                 plus(kb, index, kb.index(1)), kb.index(0));
}

/// Softmax probabilities of a tile of masked scores, p = exp(t - lse) with
/// each query row's log-sum-exp: 0 where masked.
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

/// dp[i, j] = sum_c dout[i, c] v[j, c] for a tile; loops (i, j, c).
Value outputGradScores(KernelBuilder &kb, Value outputGrad, Value value) {
  return kb.contract(outputGrad, value,
                     matrixInit(kb, kb.dim(outputGrad, 0), kb.dim(value, 0),
                                /*zero=*/true),
                     {kb.map(3, {0, 2}), kb.map(3, {1, 2}), kb.map(3, {0, 1})});
}

/// Each query row's log-sum-exp of its masked scores, lse = m + log l, by
/// the online recurrence over the key blocks it sees (file comment): the
/// softmax statistics without a row of scores ever whole. `keyBlocks`:
/// visibleKeyBlocks; `query`,
/// `queryPositions`: the block's rows; `k`, `v` [n, H * hd] GEMM operands.
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

/// A parallel loop over (sequence, head, query block), each iteration
/// given its QueryBlock and its query block index; `body` returns, for
/// each of `outputs` [n, ...], the tile to write and where (row offset,
/// rows, column offset, columns; a vector result writes one column).
struct TileWrite {
  Value tile;
  OpFoldResult col;
  int64_t cols; // 0: `tile` is a vector written into column `col`
};
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

/// A pattern that knows seq_len and the most sequences of a batch (0 when
/// the module has none) and the tile's rows.
template <typename Op> struct AttentionPattern : OpRewritePattern<Op> {
  AttentionPattern(MLIRContext *context, int64_t maxSequenceRows,
                   int64_t maxSequences, int64_t blockRows)
      : OpRewritePattern<Op>(context), maxSequenceRows(maxSequenceRows),
        maxSequences(maxSequences), blockRows(blockRows) {}
  int64_t maxSequenceRows, maxSequences, blockRows;
};

struct LowerAttention : AttentionPattern<moma::AttentionOp> {
  using AttentionPattern::AttentionPattern;

  LogicalResult matchAndRewrite(moma::AttentionOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    auto type = cast<RankedTensorType>(op.getQuery().getType());
    int64_t heads = op.getNumHeads();
    int64_t headDim = type.getDimSize(1) / heads;
    double scale = op.getScale().convertToDouble();
    Value q = kb.gemmOperand(op.getQuery()), k = kb.gemmOperand(op.getKey()),
          v = kb.gemmOperand(op.getValue());
    Value init =
        kb.empty(type.getShape(), kb.f32,
                 kb.dynamicOf(type.getShape(), kb.dims(op.getQuery())));
    Value out =
        forEachQueryBlock(
            kb, op.getSequenceIds(), init, heads, headDim, maxSequenceRows,
            maxSequences, blockRows,
            [&](const QueryBlock &block, Value index, ValueRange shared) {
              Value positions = op.getPositions();
              Value query =
                  blockOf(kb, q, block.row, block.rows, block.col, headDim);
              Value queryPositions =
                  rangeOf(kb, positions, block.row, block.rows);
              Value keyBlocks = visibleKeyBlocks(kb, block, index);
              Value logSumExp =
                  rowLogSumExp(kb, block, keyBlocks, query, queryPositions, k,
                               v, positions, headDim, blockRows, scale);
              // out = sum_j p v, accumulated where the forall writes it.
              Value out0 =
                  linalg::FillOp::create(
                      rewriter, op.getLoc(), ValueRange{kb.f32Const(0.0)},
                      ValueRange{blockOf(kb, shared[0], block.row, block.rows,
                                         block.col, headDim)})
                      .getResult(0);
              Value tile =
                  forLoop(
                      kb, kb.index(0), keyBlocks, {out0},
                      [&](Value keyBlock,
                          ValueRange out) -> SmallVector<Value> {
                        KeyBlock keys =
                            keyBlockOf(kb, block, keyBlock, k, v, positions,
                                       headDim, blockRows);
                        Value p = probabilities(
                            kb,
                            maskedScores(kb, query, keys.key, queryPositions,
                                         keys.positions, scale),
                            logSumExp);
                        // out[i, c] += sum_j p[i, j] v[j, c]; loops (i, c, j).
                        return {
                            kb.contract(kb.gemmOperand(p), keys.value, out[0],
                                        {kb.map(3, {0, 2}), kb.map(3, {2, 1}),
                                         kb.map(3, {0, 1})})};
                      })
                      .front();
              return SmallVector<TileWrite>{{tile, block.col, headDim}};
            })
            .front();
    rewriter.replaceOp(op, out);
    return success();
  }
};

struct LowerAttentionGrad : AttentionPattern<moma::AttentionGradOp> {
  using AttentionPattern::AttentionPattern;

  LogicalResult matchAndRewrite(moma::AttentionGradOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    Location loc = op.getLoc();
    auto type = cast<RankedTensorType>(op.getQuery().getType());
    int64_t heads = op.getNumHeads();
    int64_t headDim = type.getDimSize(1) / heads;
    double scale = op.getScale().convertToDouble();
    Value positions = op.getPositions(), ids = op.getSequenceIds();
    Value dout = op.getOutputGrad();
    // GEMM operands, rounded once for every tile where GEMMs take bf16.
    Value q = kb.gemmOperand(op.getQuery()), k = kb.gemmOperand(op.getKey()),
          v = kb.gemmOperand(op.getValue()), doutOperand = kb.gemmOperand(dout);
    SmallVector<Value> rowSizes = kb.dims(op.getQuery());

    // Row statistics per head: lse = m + log l and D = rowsum(dout * out).
    SmallVector<int64_t> statsShape = {type.getDimSize(0), heads};
    SmallVector<Value> statsDyn = kb.dynamicOf(statsShape, rowSizes);
    SmallVector<Value> statistics = forEachQueryBlock(
        kb, ids,
        {kb.empty(statsShape, kb.f32, statsDyn),
         kb.empty(statsShape, kb.f32, statsDyn)},
        heads, headDim, maxSequenceRows, maxSequences, blockRows,
        [&](const QueryBlock &block, Value index, ValueRange) {
          Value query =
              blockOf(kb, q, block.row, block.rows, block.col, headDim);
          Value queryPositions = rangeOf(kb, positions, block.row, block.rows);
          Value outputGrad = blockOf(kb, doutOperand, block.row, block.rows,
                                     block.col, headDim);
          Value keyBlocks = visibleKeyBlocks(kb, block, index);
          Value logSumExp =
              rowLogSumExp(kb, block, keyBlocks, query, queryPositions, k, v,
                           positions, headDim, blockRows, scale);
          // D[i] = sum_j p[i, j] dp[i, j], dp = dout v^T: the softmax
          // gradient's row term, as the GEMMs' operands give it.
          Value rowDot =
              forLoop(
                  kb, kb.index(0), keyBlocks,
                  {kb.zeros({ShapedType::kDynamic}, kb.f32, {block.rows})},
                  [&](Value keyBlock, ValueRange sum) -> SmallVector<Value> {
                    KeyBlock keys = keyBlockOf(kb, block, keyBlock, k, v,
                                               positions, headDim, blockRows);
                    Value p = probabilities(kb,
                                            maskedScores(kb, query, keys.key,
                                                         queryPositions,
                                                         keys.positions, scale),
                                            logSumExp);
                    Value dp = outputGradScores(kb, outputGrad, keys.value);
                    return {kb.generic({p, dp}, sum[0],
                                       {kb.identity(2), kb.identity(2),
                                        kb.map(2, {0})},
                                       {kPar, kRed}, multiplyAccumulate)
                                .front()};
                  })
                  .front();
          return SmallVector<TileWrite>{{logSumExp, block.head, 0},
                                        {rowDot, block.head, 0}};
        });
    Value logSumExps = statistics[0], rowDots = statistics[1];

    SmallVector<Value> inits;
    for (int i = 0; i < 3; ++i)
      inits.push_back(kb.empty(type.getShape(), kb.f32,
                               kb.dynamicOf(type.getShape(), rowSizes)));
    auto forall = scf::ForallOp::create(
        rewriter, loc,
        ArrayRef<OpFoldResult>{OpFoldResult(sequenceCount(kb, ids,
                                                          maxSequences)),
                               rewriter.getIndexAttr(heads)},
        inits, std::nullopt);
    OpBuilder::InsertionGuard guard(rewriter);
    rewriter.setInsertionPoint(forall.getTerminator());
    ValueRange ivs = forall.getInductionVars();
    SequenceRows sequence = rowsOfSequence(kb, ids, ivs[0], maxSequenceRows);
    Value col = times(kb, ivs[1], headDim);
    Value zero = kb.f32Const(0.0);
    // This (sequence, head)'s rows of dq, dk and dv, zeroed, accumulated in
    // place.
    SmallVector<Value> grads;
    for (Value shared : forall.getRegionIterArgs())
      grads.push_back(linalg::FillOp::create(
                          rewriter, loc, ValueRange{zero},
                          ValueRange{blockOf(kb, shared, sequence.start,
                                             sequence.length, col, headDim)})
                          .getResult(0));
    Value blocks = arith::CeilDivUIOp::create(rewriter, loc, sequence.length,
                                              kb.index(blockRows));
    Value scaleValue = kb.f32Const(scale);
    SmallVector<Value> final = forLoop(
        kb, kb.index(0), blocks, grads,
        [&](Value keyBlock, ValueRange outer) -> SmallVector<Value> {
          Value keyOffset = times(kb, keyBlock, blockRows);
          Value keyRow = plus(kb, sequence.start, keyOffset);
          Value keyRows = blockLength(kb, sequence.length, keyBlock, blockRows);
          Value key = blockOf(kb, k, keyRow, keyRows, col, headDim);
          Value value = blockOf(kb, v, keyRow, keyRows, col, headDim);
          Value keyPositions = rangeOf(kb, positions, keyRow, keyRows);
          Value keyGrad0 = blockOf(kb, outer[1], keyOffset, keyRows,
                                   kb.b.getIndexAttr(0), headDim);
          Value valueGrad0 = blockOf(kb, outer[2], keyOffset, keyRows,
                                     kb.b.getIndexAttr(0), headDim);
          // The query blocks that see this key block: itself and later.
          SmallVector<Value> inner = forLoop(
              kb, keyBlock, blocks, {outer[0], keyGrad0, valueGrad0},
              [&](Value queryBlock, ValueRange state) -> SmallVector<Value> {
                Value queryOffset = times(kb, queryBlock, blockRows);
                Value queryRow = plus(kb, sequence.start, queryOffset);
                Value queryRows =
                    blockLength(kb, sequence.length, queryBlock, blockRows);
                Value query = blockOf(kb, q, queryRow, queryRows, col, headDim);
                Value outputGrad =
                    blockOf(kb, doutOperand, queryRow, queryRows, col, headDim);
                Value queryPositions =
                    rangeOf(kb, positions, queryRow, queryRows);
                Value logSumExp =
                    columnOf(kb, logSumExps, queryRow, queryRows, ivs[1]);
                Value rowDot =
                    columnOf(kb, rowDots, queryRow, queryRows, ivs[1]);
                Value t = maskedScores(kb, query, key, queryPositions,
                                       keyPositions, scale);
                Value p = probabilities(kb, t, logSumExp);
                // dv[j, c] += sum_i p[i, j] dout[i, c]; loops (j, c, i).
                Value valueGrad = kb.contract(
                    kb.gemmOperand(p), outputGrad, state[2],
                    {kb.map(3, {2, 0}), kb.map(3, {2, 1}), kb.map(3, {0, 1})});
                Value dp = outputGradScores(kb, outputGrad, value);
                Value ds =
                    kb.generic(
                          {p, dp, rowDot},
                          matrixInit(kb, queryRows, keyRows, false),
                          {kb.identity(2), kb.identity(2), kb.map(2, {0}),
                           kb.identity(2)},
                          {kPar, kPar},
                          [&](OpBuilder &b, Location loc, ValueRange args) {
                            Value centered =
                                arith::SubFOp::create(b, loc, args[1], args[2]);
                            return SmallVector<Value>{arith::MulFOp::create(
                                b, loc,
                                arith::MulFOp::create(b, loc, args[0],
                                                      centered),
                                scaleValue)};
                          })
                        .front();
                Value dsOperand = kb.gemmOperand(ds);
                // dq[i, c] += sum_j ds[i, j] k[j, c]; loops (i, c, j).
                Value queryGradBlock =
                    blockOf(kb, state[0], queryOffset, queryRows,
                            kb.b.getIndexAttr(0), headDim);
                Value queryGradTile = kb.contract(
                    dsOperand, key, queryGradBlock,
                    {kb.map(3, {0, 2}), kb.map(3, {2, 1}), kb.map(3, {0, 1})});
                Value queryGrad = tensor::InsertSliceOp::create(
                    kb.b, loc, queryGradTile, state[0],
                    ArrayRef<OpFoldResult>{queryOffset, kb.b.getIndexAttr(0)},
                    ArrayRef<OpFoldResult>{queryRows,
                                           kb.b.getIndexAttr(headDim)},
                    ArrayRef<OpFoldResult>{kb.b.getIndexAttr(1),
                                           kb.b.getIndexAttr(1)});
                // dk[j, c] += sum_i ds[i, j] q[i, c]; loops (j, c, i).
                Value keyGrad = kb.contract(
                    dsOperand, query, state[1],
                    {kb.map(3, {2, 0}), kb.map(3, {2, 1}), kb.map(3, {0, 1})});
                return {queryGrad, keyGrad, valueGrad};
              });
          auto insertRows = [&](Value tile, Value into) -> Value {
            return tensor::InsertSliceOp::create(
                kb.b, loc, tile, into,
                ArrayRef<OpFoldResult>{keyOffset, kb.b.getIndexAttr(0)},
                ArrayRef<OpFoldResult>{keyRows, kb.b.getIndexAttr(headDim)},
                ArrayRef<OpFoldResult>{kb.b.getIndexAttr(1),
                                       kb.b.getIndexAttr(1)});
          };
          return {inner[0], insertRows(inner[1], outer[1]),
                  insertRows(inner[2], outer[2])};
        });
    rewriter.setInsertionPointToStart(forall.getTerminator().getBody());
    for (auto [grad, shared] : llvm::zip(final, forall.getRegionIterArgs()))
      tensor::ParallelInsertSliceOp::create(
          rewriter, loc, grad, shared,
          ArrayRef<OpFoldResult>{sequence.start, col},
          ArrayRef<OpFoldResult>{sequence.length,
                                 rewriter.getIndexAttr(headDim)},
          ArrayRef<OpFoldResult>{rewriter.getIndexAttr(1),
                                 rewriter.getIndexAttr(1)});
    rewriter.replaceOp(op, forall.getResults());
    return success();
  }
};

} // namespace

void populateAttentionLoweringPatterns(RewritePatternSet &patterns,
                                       int64_t maxSequenceRows,
                                       int64_t maxSequences,
                                       int64_t blockRows) {
  patterns.add<LowerAttention, LowerAttentionGrad>(
      patterns.getContext(), maxSequenceRows, maxSequences, blockRows);
}

} // namespace momac::lowering
