//===- CloneSharedFills.cpp - One fill per accumulating kernel ------------===//
//
// See Passes.td.
//
//===----------------------------------------------------------------------===//

#include "compiler/Codegen/Passes.h"

#include "mlir/IR/PatternMatch.h"

namespace momac {
#define GEN_PASS_DEF_CLONESHAREDFILLS
#include "compiler/Codegen/Passes.h.inc"
} // namespace momac

using namespace mlir;

namespace {

struct CloneSharedFillsPass
    : momac::impl::CloneSharedFillsBase<CloneSharedFillsPass> {
  void runOnOperation() override {
    SmallVector<linalg::FillOp> shared;
    getOperation().walk([&](linalg::FillOp fill) {
      if (fill.hasPureTensorSemantics() && !fill->hasOneUse() &&
          fill.getOutputs().front().getDefiningOp<tensor::EmptyOp>())
        shared.push_back(fill);
    });
    IRRewriter rewriter(&getContext());
    for (linalg::FillOp fill : shared) {
      auto empty = fill.getOutputs().front().getDefiningOp<tensor::EmptyOp>();
      // Every user gets a fill (and an empty tensor) of its own, right in
      // front of it, where the CPU target folds a zero fill into its GEMM.
      SmallVector<OpOperand *> uses = llvm::map_to_vector(
          fill->getResult(0).getUses(), [](OpOperand &use) { return &use; });
      for (OpOperand *use : uses) {
        rewriter.setInsertionPoint(use->getOwner());
        Operation *emptyCopy = rewriter.clone(*empty);
        IRMapping mapping;
        mapping.map(empty.getResult(), emptyCopy->getResult(0));
        Operation *fillCopy = rewriter.clone(*fill, mapping);
        rewriter.modifyOpInPlace(use->getOwner(), [&] {
          use->set(fillCopy->getResult(0));
        });
      }
      rewriter.eraseOp(fill);
      if (empty->use_empty())
        rewriter.eraseOp(empty);
    }
  }
};

} // namespace
