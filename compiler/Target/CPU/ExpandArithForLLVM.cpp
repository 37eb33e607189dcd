//===- ExpandArithForLLVM.cpp - The arith expansions LLVM needs -----------===//
//
// See Passes.td. The expansions are upstream's; this pass picks which.
//
//===----------------------------------------------------------------------===//

#include "compiler/Codegen/GreedyRewrite.h"
#include "compiler/Target/CPU/Passes.h"

#include "mlir/Dialect/Arith/Transforms/Passes.h"

namespace momac {
#define GEN_PASS_DEF_EXPANDARITHFORLLVM
#include "compiler/Target/CPU/Passes.h.inc"
} // namespace momac

using namespace mlir;

namespace {

struct ExpandArithForLLVMPass
    : momac::impl::ExpandArithForLLVMBase<ExpandArithForLLVMPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    arith::populateExpandBFloat16Patterns(patterns);
    arith::populateCeilFloorDivExpandOpsPatterns(patterns);
    if (failed(momac::applyPatternsOrReport(getOperation(), std::move(patterns),
                                            getArgument())))
      signalPassFailure();
  }
};

} // namespace
