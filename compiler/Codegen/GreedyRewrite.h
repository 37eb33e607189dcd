//===- GreedyRewrite.h - A greedy rewrite that names its pass ---*- C++ -*-===//

#ifndef MOMAC_COMPILER_CODEGEN_GREEDYREWRITE_H
#define MOMAC_COMPILER_CODEGEN_GREEDYREWRITE_H

#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace momac {

/// applyPatternsGreedily on `op`, for the pass whose argument is `pass`. A
/// rewrite that does not converge is an internal error, which fails the pass
/// silently by itself: here it is reported, naming the pass ("<pass>: the
/// rewrite did not converge").
inline mlir::LogicalResult
applyPatternsOrReport(mlir::Operation *op, mlir::RewritePatternSet &&patterns,
                      llvm::StringRef pass) {
  if (mlir::succeeded(mlir::applyPatternsGreedily(op, std::move(patterns))))
    return mlir::success();
  return op->emitError() << pass << ": the rewrite did not converge";
}

} // namespace momac

#endif // MOMAC_COMPILER_CODEGEN_GREEDYREWRITE_H
