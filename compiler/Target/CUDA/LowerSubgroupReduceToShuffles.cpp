//===- LowerSubgroupReduceToShuffles.cpp - Warp reductions as shuffles ----===//
//
// See Passes.td. Upstream MLIR has the patterns (butterfly shuffles) but no
// pass that applies them: this is that pass, for the CUDA kernels.
//
//===----------------------------------------------------------------------===//

#include "compiler/Codegen/GreedyRewrite.h"
#include "compiler/Target/CUDA/Passes.h"
#include "compiler/Target/CUDA/ThreadDistribution.h"

#include "mlir/Dialect/GPU/Transforms/Passes.h"

namespace momac {
#define GEN_PASS_DEF_LOWERSUBGROUPREDUCETOSHUFFLES
#include "compiler/Target/CUDA/Passes.h.inc"
} // namespace momac

using namespace mlir;

namespace {

struct LowerSubgroupReduceToShufflesPass
    : momac::impl::LowerSubgroupReduceToShufflesBase<
          LowerSubgroupReduceToShufflesPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    // Values narrower than 32 bits travel widened in one 32-bit shuffle;
    // wider ones are first broken into 32-bit pieces.
    populateGpuBreakDownSubgroupReducePatterns(patterns,
                                               /*maxShuffleBitwidth=*/32);
    populateGpuLowerSubgroupReduceToShufflePatterns(patterns, momac::kWarpSize,
                                                    /*shuffleBitwidth=*/32);
    if (failed(momac::applyPatternsOrReport(
            getOperation(), std::move(patterns),
            "moma-lower-subgroup-reduce-to-shuffles")))
      return signalPassFailure();
    // Whatever is left has no shuffle lowering (NVVM has none for it).
    WalkResult left = getOperation()->walk([](gpu::SubgroupReduceOp op) {
      op.emitError("moma-lower-subgroup-reduce-to-shuffles: no shuffle "
                   "lowering for this reduction");
      return WalkResult::interrupt();
    });
    if (left.wasInterrupted())
      signalPassFailure();
  }
};

} // namespace
