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

#include "compiler/Conversion/MomaToLinalg/KernelBuilder.h"
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

using namespace momac::lowering;

namespace {

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
    Value scale = rowInverseRms(kb, x, op.getEpsilon().convertToDouble());
    Value init = kb.empty(type.getShape(), kb.f32, rowsDyn);
    Value result =
        kb.generic(
              {x, scale, op.getWeight()}, init,
              {kb.identity(2), kb.map(2, {0}), kb.map(2, {1}), kb.identity(2)},
              {kPar, kPar},
              [&](OpBuilder &b, Location loc, ValueRange args) {
                Value normed = arith::MulFOp::create(b, loc, args[0], args[1]);
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
    Value x = kb.splitHeads(op.getInput(), heads);
    SmallVector<Value> rowsDyn = type.isDynamicDim(0)
                                     ? SmallVector<Value>{kb.dim(x, 0)}
                                     : SmallVector<Value>{};
    auto [mean, scale] =
        headStatistics(kb, x, op.getEpsilon().convertToDouble());
    Value init = kb.empty(cast<RankedTensorType>(x.getType()).getShape(),
                          kb.f32, rowsDyn);
    Value normed =
        kb.generic({x, mean, scale, op.getWeight(), op.getBias()}, init,
                   {kb.identity(3), kb.map(3, {0, 1}), kb.map(3, {0, 1}),
                    kb.map(3, {1, 2}), kb.map(3, {1, 2}), kb.identity(3)},
                   {kPar, kPar, kPar},
                   [&](OpBuilder &b, Location loc, ValueRange args) {
                     Value centered =
                         arith::SubFOp::create(b, loc, args[0], args[1]);
                     Value y = arith::MulFOp::create(
                         b, loc, arith::MulFOp::create(b, loc, centered, args[2]),
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
    // The inverse rotation (the gradient) turns by -phi.
    double direction = op.getInverse() ? -1.0 : 1.0;
    Value x = kb.splitHeads(op.getInput(), heads);
    SmallVector<Value> rowDyn =
        type.isDynamicDim(0) ? SmallVector<Value>{kb.dim(x, 0)}
                             : SmallVector<Value>{};
    // cos(phi) and sin(phi) per token and frequency, shared by the heads:
    // phi = s * theta^(-2 p / hd) for pair p, in double.
    SmallVector<int64_t> tableShape = {type.getDimSize(0), half};
    ValueRange tables = kb.generic(
        {op.getPositions()},
        {kb.empty(tableShape, kb.f32, rowDyn),
         kb.empty(tableShape, kb.f32, rowDyn)},
        {kb.map(2, {0}), kb.identity(2), kb.identity(2)}, {kPar, kPar},
        [&](OpBuilder &b, Location loc, ValueRange args) {
          Value pair = linalg::IndexOp::create(b, loc, 1);
          Value pairF = arith::UIToFPOp::create(
              b, loc, b.getF64Type(),
              arith::IndexCastUIOp::create(b, loc, b.getI64Type(), pair));
          Value exponent = arith::MulFOp::create(
              b, loc, pairF,
              arith::ConstantOp::create(
                  b, loc, b.getF64FloatAttr(-2.0 * logTheta / double(headDim))));
          Value frequency = math::ExpOp::create(b, loc, exponent);
          Value position =
              arith::SIToFPOp::create(b, loc, b.getF64Type(), args[0]);
          Value phi = arith::MulFOp::create(
              b, loc, arith::MulFOp::create(b, loc, position, frequency),
              arith::ConstantOp::create(b, loc, b.getF64FloatAttr(direction)));
          return SmallVector<Value>{
              arith::TruncFOp::create(b, loc, b.getF32Type(),
                                      math::CosOp::create(b, loc, phi)),
              arith::TruncFOp::create(b, loc, b.getF32Type(),
                                      math::SinOp::create(b, loc, phi))};
        });
    Value cosines = tables[0], sines = tables[1];
    Value init = kb.empty(cast<RankedTensorType>(x.getType()).getShape(),
                          kb.f32, rowDyn);
    Value rotated =
        kb.generic(
              {x}, init, {kb.identity(3), kb.identity(3)}, {kPar, kPar, kPar},
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
                Value pair = arith::RemUIOp::create(b, loc, j, halfIndex);
                Value cosine = tensor::ExtractOp::create(b, loc, cosines,
                                                         ValueRange{i, pair});
                Value sine =
                    tensor::ExtractOp::create(b, loc, sines, ValueRange{i, pair});
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
    auto rows = [&](Value tensor, Value offset, int64_t count) -> Value {
      auto tensorType = cast<RankedTensorType>(tensor.getType());
      SmallVector<OpFoldResult> offsets(tensorType.getRank(),
                                        b.getIndexAttr(0)),
          sizes = {b.getIndexAttr(count)},
          strides(tensorType.getRank(), b.getIndexAttr(1));
      offsets[0] = offset;
      if (tensorType.getRank() == 2)
        sizes.push_back(b.getIndexAttr(width));
      return tensor::ExtractSliceOp::create(b, loc, tensor, offsets, sizes,
                                            strides);
    };
    Value q = kb.splitHeads(rows(query, i, 1), heads);
    Value k = kb.splitHeads(rows(op.getKeyCache(), first, context), heads);
    Value v = kb.splitHeads(rows(op.getValueCache(), first, context), heads);
    // Keys: positions 0..context-1; the sequence id where a row is
    // present, -1 (no sequence) where it is not.
    Value keyPositions =
        kb.generic({}, kb.empty({context}, kb.i32), {kb.identity(1)}, {kPar},
                   [&](OpBuilder &nested, Location at, ValueRange) {
                     Value j = linalg::IndexOp::create(nested, at, 0);
                     return SmallVector<Value>{toI32(nested, at, j)};
                   })
            .front();
    Value keySequences =
        kb.generic({rows(op.getValid(), first, context)},
                   kb.empty({context}, kb.i32),
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
    Value logits = kb.matmulInF32(op.getInput(), op.getWeight(), false, true);
    if (Value noise = op.getNoise())
      logits = kb.elementwise(
          {logits, noise}, kb.f32,
          [](OpBuilder &b, Location loc, ValueRange args) {
            return SmallVector<Value>{
                arith::AddFOp::create(b, loc, args[0], args[1])};
          });
    rewriter.replaceOp(op, sigmoidOf(kb, logits));
    return success();
  }
};

struct LowerAuxRouter : OpRewritePattern<moma::AuxRouterOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::AuxRouterOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    Value hidden =
        kb.elementwise({kb.matmulInF32(op.getInput(), op.getW1(), false, true)},
                       kb.f32, [](OpBuilder &b, Location loc, ValueRange args) {
                         return SmallVector<Value>{silu(b, loc, args[0])};
                       });
    Value logits = kb.matmulInF32(hidden, op.getW2(), false, true);
    rewriter.replaceOp(op, sigmoidOf(kb, logits));
    return success();
  }
};

/// The positions i of `ids` whose id is a `member`, ascending, written from
/// the front of `list`; returns the filled list and how many were written.
std::pair<Value, Value> fillGroupList(
    KernelBuilder &kb, Value ids, Value list,
    function_ref<Value(OpBuilder &, Location, Value)> member) {
  SmallVector<Value> filled = kb.loops(
      {kb.dim(ids, 0)}, {list, kb.index(0)},
      [&](OpBuilder &b, Location loc, ValueRange ivs, ValueRange state) {
        Value id = tensor::ExtractOp::create(b, loc, ids, ValueRange{ivs[0]});
        auto branch = scf::IfOp::create(
            b, loc, member(b, loc, id),
            [&](OpBuilder &tb, Location tl) {
              Value stored = tensor::InsertOp::create(
                  tb, tl, toI32(tb, tl, ivs[0]), state[0],
                  ValueRange{state[1]});
              Value next = arith::AddIOp::create(
                  tb, tl, state[1], arith::ConstantIndexOp::create(tb, tl, 1));
              scf::YieldOp::create(tb, tl, ValueRange{stored, next});
            },
            [&](OpBuilder &eb, Location el) {
              scf::YieldOp::create(eb, el, state);
            });
        return SmallVector<Value>(branch.getResults());
      });
  return {filled[0], filled[1]};
}

/// Each group's token-range list, from a partition op's attribute.
SmallVector<ArrayRef<int64_t>> groupRangeLists(ArrayAttr groupRanges) {
  SmallVector<ArrayRef<int64_t>> bounds;
  for (Attribute rangeList : groupRanges)
    bounds.push_back(cast<DenseI64ArrayAttr>(rangeList).asArrayRef());
  return bounds;
}

struct LowerModalityPartition : OpRewritePattern<moma::ModalityPartitionOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::ModalityPartitionOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    Value ids = op.getTokenIds();
    Value n = kb.dim(ids, 0);
    SmallVector<ArrayRef<int64_t>> groupBounds =
        groupRangeLists(op.getGroupRanges());
    auto member = [&](OpBuilder &b, Location loc, Value id, size_t group) {
      return inRanges(b, loc, id, groupBounds[group]);
    };
    // Every group's count in one pass over the tokens, before any list:
    // the counts size the lists (and the experts' buffers and grids), so a
    // GPU step reads them back to the host, and computed together they come
    // back in one read (moma-map-host-code-to-gpu).
    SmallVector<Value> zeros(groupBounds.size(), kb.index(0));
    SmallVector<Value> counts = kb.loops(
        {n}, zeros,
        [&](OpBuilder &b, Location loc, ValueRange ivs, ValueRange state) {
          Value id = tensor::ExtractOp::create(b, loc, ids, ValueRange{ivs[0]});
          Value one = arith::ConstantIndexOp::create(b, loc, 1);
          Value zero = arith::ConstantIndexOp::create(b, loc, 0);
          SmallVector<Value> next;
          for (size_t g = 0; g < groupBounds.size(); ++g)
            next.push_back(arith::AddIOp::create(
                b, loc, state[g],
                arith::SelectOp::create(b, loc, member(b, loc, id, g), one,
                                        zero)));
          return next;
        });
    // Then each group's tokens, in ascending order.
    SmallVector<Value> results;
    for (size_t g = 0; g < groupBounds.size(); ++g) {
      auto type = cast<RankedTensorType>(op.getIndices()[g].getType());
      Value list =
          kb.empty(type.getShape(), kb.i32,
                   type.isDynamicDim(0) ? ValueRange{counts[g]} : ValueRange{});
      results.push_back(
          fillGroupList(kb, ids, list,
                        [&](OpBuilder &b, Location loc, Value id) {
                          return member(b, loc, id, g);
                        })
              .first);
    }
    rewriter.replaceOp(op, results);
    return success();
  }
};

struct LowerPaddedModalityPartition
    : OpRewritePattern<moma::PaddedModalityPartitionOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::PaddedModalityPartitionOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    Value ids = op.getTokenIds();
    Value n = kb.dim(ids, 0);
    auto listType = cast<RankedTensorType>(ids.getType());
    SmallVector<Value> nDyn = kb.dynamicOf(listType.getShape(), {n});
    // Every list starts as padding (n) and takes its group's tokens from
    // the front. Each count goes into the counts tensor right after its
    // loop, so on a GPU the store runs in the loop's own launch and the
    // count never has to come back to the host.
    SmallVector<Value> results;
    Value counts = kb.empty(
        cast<RankedTensorType>(op.getCounts().getType()).getShape(), kb.i32);
    Value paddingIndex = toI32(kb.b, kb.loc, n);
    for (auto [g, bounds] :
         llvm::enumerate(groupRangeLists(op.getGroupRanges()))) {
      Value padding =
          kb.filled(listType.getShape(), kb.i32, paddingIndex, nDyn);
      auto [list, count] =
          fillGroupList(kb, ids, padding,
                        [&](OpBuilder &b, Location loc, Value id) {
                          return inRanges(b, loc, id, bounds);
                        });
      results.push_back(list);
      counts = tensor::InsertOp::create(rewriter, op.getLoc(),
                                        toI32(kb.b, kb.loc, count), counts,
                                        ValueRange{kb.index(int64_t(g))});
    }
    results.push_back(counts);
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
    double capacity = op.getCapacityFactor().convertToDouble();
    Value k = expertCapacity(rewriter, op.getLoc(), n, capacity, experts);
    // With a valid count, padding rows sort last and k, the width, is the
    // bound for n rows; the count's own k is taken in the kernel below.
    Value valid = op.getValid();
    Value top = selectSmallestKeys(kb, selectionKeys(kb, scores, valid), k);
    auto indexType = cast<RankedTensorType>(op.getIndices().getType());
    // Owned: a ValueRange{k} kept in a variable would point into a
    // temporary initializer list.
    SmallVector<Value> kDyn;
    if (indexType.isDynamicDim(1))
      kDyn.push_back(k);
    // Slot j of expert e is its j-th best token, and its gate that token's
    // score.
    SmallVector<Value> chosen = kb.generic(
        {}, {kb.empty(indexType.getShape(), kb.i32, kDyn),
             kb.empty(indexType.getShape(), kb.f32, kDyn)},
        {kb.identity(2), kb.identity(2)}, {kPar, kPar},
        [&](OpBuilder &b, Location loc, ValueRange) {
          Value e = linalg::IndexOp::create(b, loc, 0);
          Value slot = linalg::IndexOp::create(b, loc, 1);
          Value token = tokenOfKey(
              b, loc, tensor::ExtractOp::create(b, loc, top, ValueRange{e, slot}));
          Value gate =
              tensor::ExtractOp::create(b, loc, scores, ValueRange{token, e});
          if (valid) {
            // A slot past the count's k: row n - 1 (padding) at gate 0.
            Value countK = expertCapacity(
                b, loc, validCount(b, loc, valid), capacity, experts);
            Value taken = arith::CmpIOp::create(
                b, loc, arith::CmpIPredicate::ult, slot, countK);
            Value lastRow = arith::SubIOp::create(
                b, loc, tensor::DimOp::create(b, loc, scores, 0),
                arith::ConstantIndexOp::create(b, loc, 1));
            token = arith::SelectOp::create(b, loc, taken, token, lastRow);
            gate = arith::SelectOp::create(
                b, loc, taken, gate,
                arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0)));
          }
          return SmallVector<Value>{toI32(b, loc, token), gate};
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
    // The top k by score, then those k in ascending token order: their
    // keys' index bits, selected again.
    Value top = selectSmallestKeys(kb, selectionKeys(kb, scores), k);
    Value zero = kb.index(0);
    Value tokenKeys = kb.generic(
        {}, {kb.empty({1, ShapedType::kDynamic}, kb.b.getI64Type(), {k})},
        {kb.identity(2)}, {kPar, kPar},
        [&](OpBuilder &b, Location loc, ValueRange) {
          Value slot = linalg::IndexOp::create(b, loc, 1);
          Value token = tokenOfKey(b, loc,
                                   tensor::ExtractOp::create(
                                       b, loc, top, ValueRange{zero, slot}));
          return SmallVector<Value>{
              arith::IndexCastUIOp::create(b, loc, b.getI64Type(), token)};
        }).front();
    Value ascending = selectSmallestKeys(kb, tokenKeys, k);
    auto type = cast<RankedTensorType>(op.getIndices().getType());
    // Owned: a ValueRange{k} kept in a variable would point into a
    // temporary initializer list.
    SmallVector<Value> kDyn;
    if (type.isDynamicDim(0))
      kDyn.push_back(k);
    SmallVector<Value> selected = kb.generic(
        {}, {kb.empty(type.getShape(), kb.i32, kDyn),
             kb.empty(type.getShape(), kb.f32, kDyn)},
        {kb.identity(1), kb.identity(1)}, {kPar},
        [&](OpBuilder &b, Location loc, ValueRange) {
          Value slot = linalg::IndexOp::create(b, loc, 0);
          Value token = arith::IndexCastUIOp::create(
              b, loc, b.getIndexType(),
              tensor::ExtractOp::create(b, loc, ascending,
                                        ValueRange{zero, slot}));
          Value gate =
              tensor::ExtractOp::create(b, loc, scores, ValueRange{token, zero});
          return SmallVector<Value>{toI32(b, loc, token), gate};
        });
    rewriter.replaceOp(op, selected);
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
                         extractRow(b, loc, source, at, op.getPadded())};
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
    bool padded = op.getPadded();
    Value destRows = kb.dim(op.getDest(), 0);
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
                   if (padded) {
                     // Padding adds 0 to row 0 instead (x + 0 == x): no
                     // branch in the loop.
                     Value inside = arith::CmpIOp::create(
                         b, loc, arith::CmpIPredicate::ult, row, destRows);
                     row = arith::SelectOp::create(
                         b, loc, inside, row,
                         arith::ConstantIndexOp::create(b, loc, 0));
                     value = arith::SelectOp::create(
                         b, loc, inside, value,
                         arith::ConstantOp::create(b, loc,
                                                   b.getF32FloatAttr(0)));
                   }
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
    Value lse = rowLogSumExp(kb, logits);
    Value crossEntropy =
        kb.generic({lse, targets}, kb.empty(rowShape, kb.f32, rowsDyn),
                   {kb.identity(1), kb.identity(1), kb.identity(1)}, {kPar},
                   [&](OpBuilder &b, Location loc, ValueRange args) {
                     Value i = linalg::IndexOp::create(b, loc, 0);
                     Value target = tensor::ExtractOp::create(
                         b, loc, logits,
                         ValueRange{i, toIndex(b, loc, args[1])});
                     return SmallVector<Value>{
                         arith::SubFOp::create(b, loc, args[0], target)};
                   })
            .front();

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

struct LowerCausalRoute : OpRewritePattern<moma::CausalRouteOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::CausalRouteOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    Value scores = op.getScores(), predictions = op.getPredictions();
    Value n = kb.dim(predictions, 0);
    int64_t outputs = cast<RankedTensorType>(scores.getType()).getDimSize(1);
    // k: the most tokens any output takes.
    Value zero = kb.index(0), one = kb.index(1);
    Value k = kb.loops({kb.index(outputs)}, {zero},
                       [&](OpBuilder &b, Location at, ValueRange e,
                           ValueRange longest) {
                         Value count =
                             scf::ForOp::create(
                                 b, at, zero, n, one, ValueRange{zero},
                                 [&](OpBuilder &inner, Location in, Value i,
                                     ValueRange state) {
                                   Value p = tensor::ExtractOp::create(
                                       inner, in, predictions,
                                       ValueRange{i, e[0]});
                                   Value next = arith::SelectOp::create(
                                       inner, in, aboveHalf(inner, in, p),
                                       arith::AddIOp::create(
                                           inner, in, state[0],
                                           arith::ConstantIndexOp::create(
                                               inner, in, 1)),
                                       state[0]);
                                   scf::YieldOp::create(inner, in, next);
                                 })
                                 .getResult(0);
                         return SmallVector<Value>{arith::MaxUIOp::create(
                             b, at, longest[0], count)};
                       })
                  .front();
    // Rows padded with token 0 at gate 0; each output's tokens in order.
    SmallVector<int64_t> shape = {outputs, ShapedType::kDynamic};
    Value indices = kb.zeros(shape, kb.i32, {k});
    Value gates = kb.zeros(shape, kb.f32, {k});
    SmallVector<Value> filled = kb.loops(
        {kb.index(outputs)}, {indices, gates},
        [&](OpBuilder &b, Location at, ValueRange e, ValueRange state) {
          auto loop = scf::ForOp::create(
              b, at, zero, n, one, ValueRange{state[0], state[1], zero},
              [&](OpBuilder &inner, Location in, Value i, ValueRange carried) {
                Value p = tensor::ExtractOp::create(inner, in, predictions,
                                                    ValueRange{i, e[0]});
                auto taken = scf::IfOp::create(
                    inner, in, aboveHalf(inner, in, p),
                    [&](OpBuilder &then, Location th) {
                      Value at2[] = {e[0], carried[2]};
                      Value s = tensor::ExtractOp::create(then, th, scores,
                                                          ValueRange{i, e[0]});
                      Value row = tensor::InsertOp::create(
                          then, th, toI32(then, th, i), carried[0], at2);
                      Value gate =
                          tensor::InsertOp::create(then, th, s, carried[1], at2);
                      Value next = arith::AddIOp::create(
                          then, th, carried[2],
                          arith::ConstantIndexOp::create(then, th, 1));
                      scf::YieldOp::create(then, th,
                                           ValueRange{row, gate, next});
                    },
                    [&](OpBuilder &other, Location ot) {
                      scf::YieldOp::create(other, ot, carried);
                    });
                scf::YieldOp::create(inner, in, taken.getResults());
              });
          return SmallVector<Value>{loop.getResult(0), loop.getResult(1)};
        });
    rewriter.replaceOp(op, filled);
    return success();
  }
};

struct LowerAuxRouterConfusion : OpRewritePattern<moma::AuxRouterConfusionOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::AuxRouterConfusionOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    Value predictions = op.getPredictions();
    Value chosen = choiceMask(kb, predictions, op.getIndices());
    Value valid = op.getValid();
    AffineMap toScalar = AffineMap::get(2, 0, {}, rewriter.getContext());
    // Sums of [predicted and chosen], [predicted], [chosen], and with
    // padding rows the decisions too: counted in the kernel, the valid
    // count is not a host-side scalar a later kernel would wait for.
    SmallVector<Value> inits;
    for (int i = 0, e = valid ? 4 : 3; i < e; ++i)
      inits.push_back(kb.zeros({}, kb.f32));
    SmallVector<AffineMap> maps = {kb.identity(2), kb.identity(2)};
    maps.append(inits.size(), toScalar);
    ValueRange sums = kb.generic(
        {predictions, chosen}, inits, maps, {kRed, kRed},
        [&](OpBuilder &b, Location at, ValueRange args) {
          Value zero = arith::ConstantOp::create(b, at, b.getF32FloatAttr(0));
          Value one = arith::ConstantOp::create(b, at, b.getF32FloatAttr(1));
          Value predicted = arith::SelectOp::create(
              b, at, aboveHalf(b, at, args[0]), one, zero);
          Value chosenHere = args[1];
          Value decision = one;
          if (valid) {
            Value token =
                isRowValid(b, at, linalg::IndexOp::create(b, at, 0), valid);
            predicted = arith::SelectOp::create(b, at, token, predicted, zero);
            chosenHere = arith::SelectOp::create(b, at, token, chosenHere, zero);
            decision = arith::SelectOp::create(b, at, token, one, zero);
          }
          Value both = arith::MulFOp::create(b, at, predicted, chosenHere);
          SmallVector<Value> next = {
              arith::AddFOp::create(b, at, args[2], both),
              arith::AddFOp::create(b, at, args[3], predicted),
              arith::AddFOp::create(b, at, args[4], chosenHere)};
          if (valid)
            next.push_back(arith::AddFOp::create(b, at, args[5], decision));
          return next;
        });
    Value decisions =
        valid ? scalarOf(kb, sums[3]) : decisionCount(kb, predictions);
    rewriter.replaceOpWithNewOp<tensor::FromElementsOp>(
        op, op.getCounts().getType(),
        ValueRange{scalarOf(kb, sums[0]), scalarOf(kb, sums[1]),
                   scalarOf(kb, sums[2]), decisions});
    return success();
  }
};

struct LowerRoutingDisagreement
    : OpRewritePattern<moma::RoutingDisagreementOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::RoutingDisagreementOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    Value predictions = op.getPredictions();
    Value chosen = choiceMask(kb, predictions, op.getIndices());
    Value total =
        kb.generic({predictions, chosen}, kb.zeros({}, kb.f32),
                   {kb.identity(2), kb.identity(2),
                    AffineMap::get(2, 0, {}, rewriter.getContext())},
                   {kRed, kRed},
                   [](OpBuilder &b, Location loc, ValueRange args) {
                     // The mask is 0 or 1: above a half where chosen.
                     Value predicted = aboveHalf(b, loc, args[0]);
                     Value batch = aboveHalf(b, loc, args[1]);
                     Value differ = arith::XOrIOp::create(b, loc, predicted,
                                                          batch);
                     Value count = arith::UIToFPOp::create(
                         b, loc, b.getF32Type(), differ);
                     return SmallVector<Value>{
                         arith::AddFOp::create(b, loc, args[2], count)};
                   })
            .front();
    // An empty group disagrees nowhere.
    Value fraction =
        meanOrZero(kb, scalarOf(kb, total), decisionCount(kb, predictions));
    rewriter.replaceOp(op, tensorOf(kb, fraction));
    return success();
  }
};

struct LowerAuxRouterLoss : OpRewritePattern<moma::AuxRouterLossOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::AuxRouterLossOp op,
                                PatternRewriter &rewriter) const override {
    KernelBuilder kb(rewriter, op.getLoc());
    Value predictions = op.getPredictions();
    Value chosen = choiceMask(kb, predictions, op.getIndices());
    // Binary cross-entropy with logs clamped at -100, as torch's BCELoss.
    Value sum = kb.zeros({}, kb.f32);
    Value total =
        kb.generic(
              {predictions, chosen}, sum,
              {kb.identity(2), kb.identity(2),
               AffineMap::get(2, 0, {}, rewriter.getContext())},
              {kRed, kRed},
              [&](OpBuilder &b, Location loc, ValueRange args) {
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
                if (Value valid = op.getValid())
                  term = arith::SelectOp::create(
                      b, loc,
                      isRowValid(b, loc, linalg::IndexOp::create(b, loc, 0),
                                 valid),
                      term,
                      arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0)));
                return SmallVector<Value>{
                    arith::SubFOp::create(b, loc, args[2], term)};
              })
            .front();
    // A router that sees no tokens (an empty group) adds 0.
    Value mean = meanOrZero(kb, scalarOf(kb, total),
                            decisionCount(kb, predictions, op.getValid()));
    rewriter.replaceOp(op, tensorOf(kb, mean));
    return success();
  }
};

//===----------------------------------------------------------------------===//
// Constants
//===----------------------------------------------------------------------===//

/// Splat tensor constants above this many elements become fills.
constexpr int64_t kLargestSplatConstant = 1024;

bool isLargeSplatConstant(arith::ConstantOp op) {
  auto splat = dyn_cast<SplatElementsAttr>(op.getValue());
  return splat && isa<RankedTensorType>(op.getType()) &&
         splat.getNumElements() > kLargestSplatConstant;
}

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

struct ConvertMomaToLinalgPass
    : public momac::impl::ConvertMomaToLinalgBase<ConvertMomaToLinalgPass> {
  using ConvertMomaToLinalgBase::ConvertMomaToLinalgBase;
  void runOnOperation() override {
    MLIRContext *context = &getContext();
    RewritePatternSet patterns(context);
    patterns.add<LowerShiftTokens, LowerTokenPositions, LowerEmbed, LowerLinear,
                 LowerRMSNorm, LowerHeadLayerNorm, LowerRope,
                 LowerCachedAttention,
                 LowerSwiGLU, LowerRouter, LowerAuxRouter,
                 LowerModalityPartition, LowerPaddedModalityPartition,
                 LowerExpertChoice, LowerModSelect,
                 LowerModMerge, LowerGatherTokens, LowerScatterAddTokens,
                 LowerCrossEntropy, LowerAuxRouterLoss, LowerCausalRoute,
                 LowerRoutingDisagreement, LowerAuxRouterConfusion,
                 LowerLargeSplatConstant, LowerTensorSplat>(context);
    int64_t maxSequenceRows = maxSequenceRowsOf(getOperation());
    populateAttentionLoweringPatterns(patterns, maxSequenceRows,
                                      maxSequencesOf(getOperation()),
                                      attentionBlockRows);
    populateGradientLoweringPatterns(patterns);
    ConversionTarget target(*context);
    target.addIllegalDialect<moma::MomaDialect>();
    target.addIllegalOp<tensor::SplatOp>();
    target.addDynamicallyLegalOp<arith::ConstantOp>(
        [](arith::ConstantOp op) { return !isLargeSplatConstant(op); });
    target.markUnknownOpDynamicallyLegal([](Operation *) { return true; });
    FrozenRewritePatternSet frozen(std::move(patterns));
    if (failed(applyPartialConversion(getOperation(), target, frozen)))
      signalPassFailure();
  }
};

} // namespace
