//===- MomaToLinalg.cpp - The moma to linalg conversion pass --------------===//
//
// convert-moma-to-linalg: every moma op, forward and gradient, becomes
// structured code on tensors that every target shares, by the patterns of
// its op family (Patterns.h); so do the large constants the gradients
// accumulate into.
//
//===----------------------------------------------------------------------===//

#include "compiler/Conversion/MomaToLinalg/Patterns.h"
#include "compiler/Conversion/MomaToLinalg/SequenceHelpers.h"
#include "compiler/Conversion/Passes.h"

#include "dialects/moma/IR/MomaDialect.h"

#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Transforms/DialectConversion.h"

namespace momac {
#define GEN_PASS_DEF_CONVERTMOMATOLINALG
#include "compiler/Conversion/Passes.h.inc"
} // namespace momac

using namespace mlir;
namespace moma = mlir::moma;

using namespace momac::lowering;

namespace {

struct ConvertMomaToLinalgPass
    : public momac::impl::ConvertMomaToLinalgBase<ConvertMomaToLinalgPass> {
  using ConvertMomaToLinalgBase::ConvertMomaToLinalgBase;
  void runOnOperation() override {
    MLIRContext *context = &getContext();
    // The patterns' KernelBuilder reads the module's GEMM operand choices.
    if (gemmOperandsInF32)
      getOperation()->setAttr(moma::kGemmOperandsInF32AttrName,
                              UnitAttr::get(context));
    RewritePatternSet patterns(context);
    populateTokenLoweringPatterns(patterns);
    populateNormLoweringPatterns(patterns);
    populateFeedForwardLoweringPatterns(patterns);
    int64_t maxSequenceRows = maxSequenceRowsOf(getOperation());
    populateAttentionLoweringPatterns(patterns, maxSequenceRows,
                                      maxSequencesOf(getOperation()),
                                      attentionBlockRows);
    populateRoutingLoweringPatterns(patterns);
    populateMixtureOfDepthsLoweringPatterns(patterns);
    populateAuxRouterLoweringPatterns(patterns);
    populateDataMovementLoweringPatterns(patterns);
    populateCrossEntropyLoweringPatterns(patterns);
    populateOptimizerLoweringPatterns(patterns);
    populateConstantLoweringPatterns(patterns);
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
