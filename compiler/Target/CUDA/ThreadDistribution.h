//===- ThreadDistribution.h - Kernels spread over GPU threads ---*- C++ -*-===//
//
// How the CUDA target runs a kernel (a `linalg` op on buffers) on a set of
// threads that all execute the surrounding code. Its parallel iterations
// are shared cyclically among the threads. Its reductions either run
// sequentially in the thread that owns the iteration, or are shared by the
// lanes of a warp (combined with shuffles, `gpu.subgroup_reduce`) or by the
// whole block (the warps' results then combined through shared memory),
// whichever `reductionLanes` expects to take the fewest steps. A barrier
// follows each kernel. The tile mapping (one block per tile) and the
// host-code mapping (a grid sized to a kernel left outside tiles) both use
// it.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_COMPILER_TARGET_CUDA_THREADDISTRIBUTION_H
#define MOMAC_COMPILER_TARGET_CUDA_THREADDISTRIBUTION_H

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/PatternMatch.h"

namespace momac {

/// Threads of a warp: the lanes a `gpu.subgroup_reduce` combines.
constexpr int64_t kWarpSize = 32;

/// How many threads share each parallel iteration of `kernel`'s reduction:
/// 1 (the iteration's thread reduces alone), kWarpSize, or
/// `threadsPerBlock` (the whole block; only when `oneBlock`, the kernel
/// then running on one block). It is more than 1 only for a kernel whose
/// loops are parallel then reduction, whose every result is a single
/// combiner `gpu.subgroup_reduce` supports (add, mul, min, max, and, or,
/// xor) over a type of at most 32 bits, and whose inputs the lanes then
/// read along their contiguous dimension. Among the eligible choices it
/// takes the one with the fewest steps per thread, from the extents'
/// constant upper bounds: with P parallel and R reduction iterations on
/// `threads` threads, ceil(P * lanes / threads) * (ceil(R / lanes) +
/// combining cost). `sizedToKernel`: the grid is sized to the kernel (a
/// launch of its own) rather than fixed (a tile's block).
int64_t reductionLanes(mlir::linalg::LinalgOp kernel, int64_t threadsPerBlock,
                       bool oneBlock, bool sizedToKernel);

struct ThreadDistribution {
  mlir::IRRewriter &rewriter;
  /// This thread's index among the threads that share the work, and their
  /// number (index values; when `oneBlock`, the count is a constant).
  mlir::Value threadId, threadCount;
  /// Whether the threads are one block (gpu.barrier orders the kernels);
  /// a grid is ordered by its launch boundaries instead.
  bool oneBlock;

  /// Lowers the ops of `block`, which every thread runs: each kernel (and
  /// memref.copy) to spread loops followed by a barrier, a kernel without
  /// a leading parallel loop and every scalar store to thread 0; uniform
  /// control flow (scf.for/if/while) is lowered inside.
  mlir::LogicalResult lowerUniformBlock(mlir::Block &block);

  /// One kernel, each parallel iteration's reduction shared by `lanes`
  /// threads (see reductionLanes; 1 keeps it in one thread).
  mlir::LogicalResult lowerKernel(mlir::linalg::LinalgOp kernel,
                                  int64_t lanes);

private:
  mlir::scf::ForOp spread(mlir::scf::ParallelOp parallel);
  mlir::LogicalResult shareReduction(mlir::linalg::LinalgOp kernel,
                                     int64_t lanes);
  void onFirstThread(mlir::Operation *op);
  void barrierAfter(mlir::Operation *op);
};

} // namespace momac

#endif // MOMAC_COMPILER_TARGET_CUDA_THREADDISTRIBUTION_H
