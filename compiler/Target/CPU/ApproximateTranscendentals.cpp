//===- ApproximateTranscendentals.cpp - Vectorizable exp and log ----------===//
//
// See Passes.td. The approximations are upstream's
// (populateMathPolynomialApproximationPatterns); this pass picks which.
//
//===----------------------------------------------------------------------===//

#include "compiler/Target/CPU/Passes.h"
#include "compiler/Codegen/GreedyRewrite.h"

#include "mlir/Dialect/Math/Transforms/Passes.h"

namespace momac {
#define GEN_PASS_DEF_APPROXIMATETRANSCENDENTALS
#include "compiler/Target/CPU/Passes.h.inc"
} // namespace momac

using namespace mlir;

namespace {

struct ApproximateTranscendentalsPass
    : momac::impl::ApproximateTranscendentalsBase<
          ApproximateTranscendentalsPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    populateMathPolynomialApproximationPatterns(
        patterns, [](StringRef name) {
          return name == math::ExpOp::getOperationName() ||
                 name == math::LogOp::getOperationName();
        });
    if (failed(momac::applyPatternsOrReport(getOperation(), std::move(patterns),
                                            getArgument())))
      signalPassFailure();
  }
};

} // namespace
