//===- LowerLinalgToCpuLoops.cpp - Kernels to parallel or sequential loops ===//
//
// See Passes.td. The loop nests are upstream linalg's (linalgOpToLoops and
// linalgOpToParallelLoops); this pass picks one per kernel by where it is.
//
//===----------------------------------------------------------------------===//

#include "compiler/Target/CPU/Passes.h"

#include "compiler/Codegen/KernelIteration.h"

#include "mlir/Dialect/Arith/Utils/Utils.h"
#include "mlir/Dialect/LLVMIR/LLVMAttrs.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Linalg/Transforms/Transforms.h"
#include "mlir/Dialect/SCF/Utils/Utils.h"
#include "mlir/IR/PatternMatch.h"

namespace momac {
#define GEN_PASS_DEF_LOWERLINALGTOCPULOOPS
#include "compiler/Target/CPU/Passes.h.inc"
} // namespace momac

using namespace mlir;

namespace {

/// True when `op` runs inside a loop whose iterations the threads share.
bool isInsideParallelLoop(Operation *op) {
  return op->getParentOfType<scf::ForallOp>() ||
         op->getParentOfType<scf::ParallelOp>();
}

/// True for a reduction whose loops are its parallel loops first, then its
/// reduction loops: the form whose accumulators can live in registers.
bool hasInnerReductions(linalg::GenericOp op) {
  auto iterators = op.getIteratorTypesArray();
  auto firstReduction = llvm::find(iterators, utils::IteratorType::reduction);
  return firstReduction != iterators.end() &&
         std::all_of(firstReduction, iterators.end(), [](auto iterator) {
           return iterator == utils::IteratorType::reduction;
         });
}

/// Asks LLVM not to unroll `loop` (`llvm.loop.unroll.disable` on its latch),
/// so that its vectorizer takes it as the innermost loop. A reduction's
/// innermost loop mostly runs along a contiguous row (d_model or head_dim
/// elements: the norms' statistics, the softmax sums). Fully unrolled
/// first, as LLVM does with any loop of a constant trip count up to a few
/// hundred iterations, it left the row loop innermost, vectorized across
/// rows with strided loads: about 1700 instructions in one block, whose
/// loop-strength reduction and instruction selection were a third of a
/// tiny model's code generation.
///
/// Every reduction gets it, also one that sums down a column (a norm
/// weight's gradient), where unrolling could vectorize the channels
/// instead: with the annotation only on rows, the one-rank and the sharded
/// (FSDP) step of tiny mod_moe_4t4i no longer agreed to 1e-5 (e2e-fsdp; a
/// grad norm off by 6.5e-4 at step 3). Not traced further; presumably
/// LLVM then sums such a column in a different order in the two steps.
void keepRolled(scf::ForOp loop) {
  MLIRContext *context = loop.getContext();
  auto unroll = LLVM::LoopUnrollAttr::get(
      context, /*disable=*/BoolAttr::get(context, true), /*count=*/nullptr,
      /*runtimeDisable=*/nullptr, /*full=*/nullptr,
      /*followupUnrolled=*/nullptr,
      /*followupRemainder=*/nullptr, /*followupAll=*/nullptr);
  auto annotation = LLVM::LoopAnnotationAttr::get(
      context, /*disableNonforced=*/nullptr, /*vectorize=*/nullptr,
      /*interleave=*/nullptr, unroll, /*unrollAndJam=*/nullptr,
      /*licm=*/nullptr, /*distribute=*/nullptr, /*pipeline=*/nullptr,
      /*peeled=*/nullptr, /*unswitch=*/nullptr, /*mustProgress=*/nullptr,
      /*isVectorized=*/nullptr, /*startLoc=*/nullptr, /*endLoc=*/nullptr,
      /*parallelAccesses=*/{});
  // SCF-to-CF hands the loop's LLVM attributes to its latch branch, under
  // the same name: `loop_annotation` is the one llvm.br translates.
  loop->setAttr(LLVM::BrOp::getLoopAnnotationAttrName(
                    OperationName(LLVM::BrOp::getOperationName(), context)),
                annotation);
}

/// Lowers a reduction kernel inside a tile to sequential loops whose
/// accumulators are loop-carried values, loaded once before the reduction
/// loops and stored once after them. Upstream's linalgOpToLoops loads and
/// stores the accumulator in every iteration; since LLVM cannot prove that
/// buffer apart from the inputs, it then keeps the reduction scalar. The
/// combiner (the body ops that read an accumulator) is marked reassociable,
/// which lets LLVM's vectorizer sum in per-lane partial sums.
void lowerReductionToLoops(IRRewriter &rewriter, linalg::GenericOp op) {
  Location loc = op.getLoc();
  SmallVector<Range, 4> ranges =
      cast<linalg::LinalgOp>(op.getOperation()).createLoopRanges(rewriter, loc);
  unsigned parallelLoops = op.getNumParallelLoops();
  auto step = [&](const Range &range) {
    return getValueOrCreateConstantIndexOp(rewriter, loc, range.stride);
  };
  auto bound = [&](const Range &range) {
    return getValueOrCreateConstantIndexOp(rewriter, loc, range.size);
  };
  auto lower = [&](const Range &range) {
    return getValueOrCreateConstantIndexOp(rewriter, loc, range.offset);
  };
  SmallVector<Value> parallelLbs, parallelUbs, parallelSteps;
  for (unsigned i = 0; i < parallelLoops; ++i) {
    parallelLbs.push_back(lower(ranges[i]));
    parallelUbs.push_back(bound(ranges[i]));
    parallelSteps.push_back(step(ranges[i]));
  }
  for (BlockArgument accumulator : op.getRegionOutputArgs())
    for (Operation *user : accumulator.getUsers())
      if (auto math = dyn_cast<arith::ArithFastMathInterface>(user)) {
        arith::FastMathFlags flags = arith::FastMathFlags::none;
        if (arith::FastMathFlagsAttr attr = math.getFastMathFlagsAttr())
          flags = attr.getValue();
        user->setAttr(math.getFastMathAttrName(),
                      arith::FastMathFlagsAttr::get(
                          rewriter.getContext(),
                          flags | arith::FastMathFlags::reassoc));
      }

  scf::buildLoopNest(
      rewriter, loc, parallelLbs, parallelUbs, parallelSteps,
      [&](OpBuilder &b, Location loc, ValueRange parallelIvs) {
        SmallVector<Value> initial;
        for (OpOperand &out : op.getDpsInitsMutable())
          initial.push_back(memref::LoadOp::create(
              b, loc, out.get(),
              momac::elementIndices(b, loc, op.getMatchingIndexingMap(&out),
                                    parallelIvs)));
        SmallVector<Value> reductionLbs, reductionUbs, reductionSteps;
        for (unsigned i = parallelLoops; i < ranges.size(); ++i) {
          reductionLbs.push_back(lower(ranges[i]));
          reductionUbs.push_back(bound(ranges[i]));
          reductionSteps.push_back(step(ranges[i]));
        }
        scf::LoopNest reduction = scf::buildLoopNest(
            b, loc, reductionLbs, reductionUbs, reductionSteps, initial,
            [&](OpBuilder &b, Location loc, ValueRange reductionIvs,
                ValueRange accumulators) -> scf::ValueVector {
              SmallVector<Value> ivs(parallelIvs);
              ivs.append(reductionIvs.begin(), reductionIvs.end());
              SmallVector<Value> next = momac::emitKernelIteration(
                  b, loc, cast<linalg::LinalgOp>(op.getOperation()), ivs,
                  accumulators);
              return scf::ValueVector(next.begin(), next.end());
            });
        if (!reduction.loops.empty())
          keepRolled(reduction.loops.back());
        for (auto [out, result] :
             llvm::zip(op.getDpsInitsMutable(), reduction.results))
          memref::StoreOp::create(
              b, loc, result, out.get(),
              momac::elementIndices(b, loc, op.getMatchingIndexingMap(&out),
                                    parallelIvs));
      });
}

struct LowerLinalgToCpuLoopsPass
    : momac::impl::LowerLinalgToCpuLoopsBase<LowerLinalgToCpuLoopsPass> {
  void runOnOperation() override {
    SmallVector<linalg::LinalgOp> kernels;
    getOperation().walk([&](linalg::LinalgOp op) { kernels.push_back(op); });
    IRRewriter rewriter(&getContext());
    for (linalg::LinalgOp op : kernels) {
      if (!op.hasPureBufferSemantics()) {
        op.emitError("moma-lower-linalg-to-cpu-loops: expects a kernel on "
                     "buffers (run after bufferization)");
        return signalPassFailure();
      }
      rewriter.setInsertionPoint(op);
      auto generic = dyn_cast<linalg::GenericOp>(op.getOperation());
      if (generic && isInsideParallelLoop(op) && hasInnerReductions(generic)) {
        lowerReductionToLoops(rewriter, generic);
        rewriter.eraseOp(op);
        continue;
      }
      FailureOr<linalg::LinalgLoops> loops =
          isInsideParallelLoop(op) ? linalg::linalgOpToLoops(rewriter, op)
                                   : linalg::linalgOpToParallelLoops(rewriter, op);
      if (failed(loops)) {
        op.emitError("moma-lower-linalg-to-cpu-loops: cannot lower to loops");
        return signalPassFailure();
      }
      rewriter.eraseOp(op);
    }
  }
};

} // namespace
