//===- LowerLinalgToCpuLoops.cpp - Kernels to parallel or sequential loops ===//
//
// See Passes.td. The loop nests are upstream linalg's (linalgOpToLoops and
// linalgOpToParallelLoops); this pass picks one per kernel by where it is.
//
//===----------------------------------------------------------------------===//

#include "compiler/Target/CPU/Passes.h"

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Linalg/Transforms/Transforms.h"
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
