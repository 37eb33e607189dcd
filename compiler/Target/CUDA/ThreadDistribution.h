//===- ThreadDistribution.h - Kernels spread over GPU threads ---*- C++ -*-===//
//
// How the CUDA target runs a kernel (a `linalg` op on buffers) on a set of
// threads that all execute the surrounding code: its parallel iterations
// shared cyclically among the threads, its reductions sequential per
// thread, a barrier after it. The tile mapping (one block per tile) and the
// host-code mapping (the whole grid on a kernel left outside tiles) both use
// it.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_COMPILER_TARGET_CUDA_THREADDISTRIBUTION_H
#define MOMAC_COMPILER_TARGET_CUDA_THREADDISTRIBUTION_H

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/PatternMatch.h"

namespace momac {

struct ThreadDistribution {
  mlir::IRRewriter &rewriter;
  /// This thread's index among the threads that share the work, and their
  /// number (index values).
  mlir::Value threadId, threadCount;
  /// Whether the threads are one block (gpu.barrier orders the kernels);
  /// a grid is ordered by its launch boundaries instead.
  bool oneBlock;

  /// Lowers the ops of `block`, which every thread runs: each kernel (and
  /// memref.copy) to spread loops followed by a barrier, a kernel without
  /// a leading parallel loop and every scalar store to thread 0; uniform
  /// control flow (scf.for/if/while) is lowered inside.
  mlir::LogicalResult lowerUniformBlock(mlir::Block &block);

  /// One kernel: see lowerUniformBlock.
  mlir::LogicalResult lowerKernel(mlir::linalg::LinalgOp kernel);

private:
  mlir::scf::ForOp spread(mlir::scf::ParallelOp parallel);
  void onFirstThread(mlir::Operation *op);
  void barrierAfter(mlir::Operation *op);
};

} // namespace momac

#endif // MOMAC_COMPILER_TARGET_CUDA_THREADDISTRIBUTION_H
