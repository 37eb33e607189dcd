//===- FuseElementwiseProducers.cpp - Elementwise producer fusion ---------===//
//
// See Passes.td. The rewriting is upstream linalg's elementwise fusion; what
// is momac's is the control: which producers are worth folding into which
// consumers.
//
//===----------------------------------------------------------------------===//

#include "compiler/Codegen/Passes.h"
#include "compiler/Codegen/GreedyRewrite.h"

#include "mlir/Dialect/Linalg/IR/LinalgInterfaces.h"
#include "mlir/Dialect/Linalg/Transforms/Transforms.h"
#include "mlir/Dialect/Math/IR/Math.h"

namespace momac {
#define GEN_PASS_DEF_FUSEELEMENTWISEPRODUCERS
#include "compiler/Codegen/Passes.h.inc"
} // namespace momac

using namespace mlir;

namespace {

/// True when the body of `op` calls a math-dialect function (exp, rsqrt,
/// log, tanh, ...): work worth doing once per element it produces.
bool hasMathOp(linalg::LinalgOp op) {
  return op.getBlock()
      ->walk([](Operation *inner) {
        return isa<math::MathDialect>(inner->getDialect())
                   ? WalkResult::interrupt()
                   : WalkResult::advance();
      })
      .wasInterrupted();
}

bool shouldFuse(OpOperand *fusedOperand) {
  auto producer = fusedOperand->get().getDefiningOp<linalg::LinalgOp>();
  auto consumer = dyn_cast<linalg::LinalgOp>(fusedOperand->getOwner());
  if (!producer || !consumer || !producer->hasOneUse())
    return false;
  if (linalg::isaContractionOpInterface(consumer))
    return false;
  bool broadcast = consumer.getNumLoops() > producer.getNumLoops();
  return !broadcast || !hasMathOp(producer);
}

struct FuseElementwiseProducersPass
    : momac::impl::FuseElementwiseProducersBase<FuseElementwiseProducersPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    linalg::populateElementwiseOpsFusionPatterns(patterns, shouldFuse);
    if (failed(momac::applyPatternsOrReport(getOperation(), std::move(patterns),
                                            getArgument())))
      signalPassFailure();
  }
};

} // namespace
