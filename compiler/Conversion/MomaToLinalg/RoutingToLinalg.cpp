//===- RoutingToLinalg.cpp - Expert routers and expert choice -------------===//
//
// The expert routers (sigmoid scores of an f32 GEMM), the modality
// partitions that split the tokens into their modality groups (plain, or
// padded for a Mixture-of-Depths layer), expert choice (MODEL_SPEC section 4)
// and the gradients of the routers and the gates.
//
//===----------------------------------------------------------------------===//

#include "compiler/Conversion/MomaToLinalg/KernelBuilder.h"
#include "compiler/Conversion/MomaToLinalg/Patterns.h"
#include "compiler/Conversion/MomaToLinalg/RoutingHelpers.h"

#include "dialects/moma/IR/MomaOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

using namespace mlir;
using namespace momac::lowering;
namespace moma = mlir::moma;

namespace {

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

struct LowerRouterGrad : OpRewritePattern<moma::RouterGradOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::RouterGradOp op,
                                PatternRewriter &rewriter) const override {
    // s = sigmoid(x w^T): dz = ds s (1 - s), dx = dz w, dw = dz^T x.
    KernelBuilder kb(rewriter, op.getLoc());
    Value dz = sigmoidBackward(kb, op.getScoresGrad(), op.getScores());
    rewriter.replaceOp(op,
                       {kb.matmulInF32(dz, op.getWeight(), false, false),
                        kb.matmulInF32(dz, op.getInput(), true, false)});
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

struct LowerGateGrad : OpRewritePattern<moma::GateGradOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(moma::GateGradOp op,
                                PatternRewriter &rewriter) const override {
    // gates[e, j] = scores[indices[e, j], e] (or [indices[j], 0]): the
    // scores' gradient is the gates' at the chosen entries.
    KernelBuilder kb(rewriter, op.getLoc());
    Value scores = op.getScores(), indices = op.getIndices();
    Value dg = op.getGatesGrad();
    auto type = cast<RankedTensorType>(scores.getType());
    bool perExpert = cast<RankedTensorType>(indices.getType()).getRank() == 2;
    Value init = kb.zeros(type.getShape(), kb.f32,
                          kb.dynamicOf(type.getShape(), kb.dims(scores)));
    Value result =
        kb.loops(kb.dims(indices), {init},
                 [&](OpBuilder &b, Location loc, ValueRange ivs,
                     ValueRange state) {
                   Value row = toIndex(
                       b, loc, tensor::ExtractOp::create(b, loc, indices, ivs));
                   Value column =
                       perExpert ? ivs[0]
                                 : arith::ConstantIndexOp::create(b, loc, 0);
                   Value old = tensor::ExtractOp::create(
                       b, loc, state[0], ValueRange{row, column});
                   Value add = tensor::ExtractOp::create(b, loc, dg, ivs);
                   return SmallVector<Value>{tensor::InsertOp::create(
                       b, loc, arith::AddFOp::create(b, loc, old, add),
                       state[0], ValueRange{row, column})};
                 })
            .front();
    rewriter.replaceOp(op, result);
    return success();
  }
};

} // namespace

void momac::lowering::populateRoutingLoweringPatterns(
    RewritePatternSet &patterns) {
  patterns.add<LowerRouter, LowerRouterGrad, LowerModalityPartition,
               LowerPaddedModalityPartition, LowerExpertChoice, LowerGateGrad>(
      patterns.getContext());
}
