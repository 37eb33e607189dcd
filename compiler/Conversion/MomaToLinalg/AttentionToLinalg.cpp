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
// moma.cached_attention (one new token per sequence against its layer's
// key/value cache, momarun generate) is small: one parallel iteration per
// query, a masked softmax over the cache rows of its sequence.
//
//===----------------------------------------------------------------------===//

#include "compiler/Conversion/MomaToLinalg/AttentionTiles.h"
#include "compiler/Conversion/MomaToLinalg/KernelBuilder.h"
#include "compiler/Conversion/MomaToLinalg/Patterns.h"
#include "compiler/Conversion/MomaToLinalg/SequenceHelpers.h"

#include "dialects/moma/IR/MomaOps.h"

#include "mlir/Dialect/Affine/IR/AffineOps.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

#include <limits>

using namespace mlir;

namespace momac::lowering {
namespace {

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

//===----------------------------------------------------------------------===//
// Cached attention (decoding)
//===----------------------------------------------------------------------===//

/// Which keys a query sees: key j is visible from query i iff both are in
/// the same sequence and j's position is not later than i's.
struct AttentionMask {
  Value queryPositions, keyPositions;
  Value querySequences, keySequences;
};

/// Masked softmax attention probabilities p[h, i, j] for per-head q [nq, H,
/// hd] and k [nk, H, hd]. Every query must see at least one key (its own,
/// in self-attention), so the row maximum is finite.
Value attentionProbabilities(KernelBuilder &kb, Value q, Value k,
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

struct LowerCachedAttention : OpRewritePattern<moma::CachedAttentionOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::CachedAttentionOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    OpBuilder &b = kb.b;
    Location loc = op.getLoc();
    Value query = op.getQuery();
    auto type = cast<RankedTensorType>(query.getType());
    int64_t width = type.getDimSize(1), heads = op.getNumHeads();
    int64_t context = op.getContext();
    double scale = op.getScale().convertToDouble();
    Value init = kb.empty(type.getShape(), kb.f32,
                          kb.dynamicOf(type.getShape(), kb.dims(query)));
    // One query per iteration: its sequence's cache rows are the keys.
    auto forall = scf::ForallOp::create(
        b, loc, ArrayRef<OpFoldResult>{OpFoldResult(kb.dim(query, 0))},
        ValueRange{init}, std::nullopt);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPoint(forall.getTerminator());
    Value i = forall.getInductionVar(0);
    Value sequence = tensor::ExtractOp::create(b, loc, op.getSequenceIds(),
                                               ValueRange{i});
    Value position =
        tensor::ExtractOp::create(b, loc, op.getPositions(), ValueRange{i});
    Value first = arith::MulIOp::create(b, loc, toIndex(b, loc, sequence),
                                        kb.index(context));
    // Only the rows up to the query's own position can be visible: a query
    // early in its sequence (a prompt's first tokens in @prefill) reads and
    // scores that many keys, not the whole cache. The masked keys it skips
    // would add exact zeros at the end of each sum. At most `context` (an
    // affine.min, so that the GPU mapping bounds the tile's temporaries).
    AffineExpr p = b.getAffineDimExpr(0);
    Value visibleRows = affine::AffineMinOp::create(
        b, loc,
        AffineMap::get(1, 0, {p + 1, b.getAffineConstantExpr(context)},
                       b.getContext()),
        ValueRange{toIndex(b, loc, position)});
    auto rows = [&](Value tensor, Value offset, OpFoldResult count) -> Value {
      auto tensorType = cast<RankedTensorType>(tensor.getType());
      SmallVector<OpFoldResult> offsets(tensorType.getRank(),
                                        b.getIndexAttr(0)),
          sizes = {count}, strides(tensorType.getRank(), b.getIndexAttr(1));
      offsets[0] = offset;
      if (tensorType.getRank() == 2)
        sizes.push_back(b.getIndexAttr(width));
      return tensor::ExtractSliceOp::create(b, loc, tensor, offsets, sizes,
                                            strides);
    };
    Value q = kb.splitHeads(rows(query, i, b.getIndexAttr(1)), heads);
    Value k = kb.splitHeads(rows(op.getKeyCache(), first, visibleRows), heads);
    Value v =
        kb.splitHeads(rows(op.getValueCache(), first, visibleRows), heads);
    // Keys: positions 0..position; the sequence id where a row is present,
    // -1 (no sequence) where it is not.
    int64_t dynamic = ShapedType::kDynamic;
    Value keyPositions =
        kb.generic({}, kb.empty({dynamic}, kb.i32, {visibleRows}),
                   {kb.identity(1)}, {kPar},
                   [&](OpBuilder &nested, Location at, ValueRange) {
                     Value j = linalg::IndexOp::create(nested, at, 0);
                     return SmallVector<Value>{toI32(nested, at, j)};
                   })
            .front();
    Value keySequences =
        kb.generic({rows(op.getValid(), first, visibleRows)},
                   kb.empty({dynamic}, kb.i32, {visibleRows}),
                   {kb.identity(1), kb.identity(1)}, {kPar},
                   [&](OpBuilder &nested, Location at, ValueRange args) {
                     Value present = arith::CmpFOp::create(
                         nested, at, arith::CmpFPredicate::ONE, args[0],
                         arith::ConstantOp::create(
                             nested, at, nested.getF32FloatAttr(0.0f)));
                     return SmallVector<Value>{arith::SelectOp::create(
                         nested, at, present, sequence,
                         arith::ConstantOp::create(
                             nested, at, nested.getI32IntegerAttr(-1)))};
                   })
            .front();
    auto one = [&](Value scalar) -> Value {
      return tensor::FromElementsOp::create(
          b, loc, RankedTensorType::get({1}, b.getI32Type()),
          ValueRange{scalar});
    };
    Value probabilities = attentionProbabilities(
        kb, q, k, {one(position), keyPositions, one(sequence), keySequences},
        scale);
    // out[0, h, c] = sum_j p[h, 0, j] v[j, h, c]; loops (i, h, c, j).
    auto splitType = cast<RankedTensorType>(q.getType());
    Value out = kb.contract(kb.gemmOperand(probabilities), kb.gemmOperand(v),
                            kb.zeros(splitType.getShape(), kb.f32),
                            {kb.map(4, {1, 0, 3}), kb.map(4, {3, 1, 2}),
                             kb.map(4, {0, 1, 2})});
    Value row = kb.joinHeads(out, RankedTensorType::get({1, width}, kb.f32));
    b.setInsertionPointToStart(forall.getTerminator().getBody());
    tensor::ParallelInsertSliceOp::create(
        b, loc, row, forall.getRegionIterArgs()[0],
        ArrayRef<OpFoldResult>{i, b.getIndexAttr(0)},
        ArrayRef<OpFoldResult>{b.getIndexAttr(1), b.getIndexAttr(width)},
        ArrayRef<OpFoldResult>{b.getIndexAttr(1), b.getIndexAttr(1)});
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
  patterns.add<LowerCachedAttention>(patterns.getContext());
}

} // namespace momac::lowering
