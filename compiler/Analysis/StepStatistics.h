//===- StepStatistics.h - What a compiled step does, counted ----*- C++ -*-===//
//
// `momac --stats`: after the shared pipeline (fused, tiled, bufferized), the
// kernels of each entry point, the library calls it makes and an estimate
// of the bytes its kernels move. Target-independent: a kernel is what every
// target launches once (a tile loop, a whole linalg op, a copy).
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_COMPILER_ANALYSIS_STEPSTATISTICS_H
#define MOMAC_COMPILER_ANALYSIS_STEPSTATISTICS_H

#include "mlir/IR/BuiltinOps.h"

#include <map>
#include <string>

namespace momac {

struct KernelCounts {
  /// Generated kernels: tile loops (scf.forall) and linalg ops left whole.
  int64_t kernels = 0;
  /// Contractions, which the targets hand to a GEMM library.
  int64_t gemms = 0;
  /// Top-k selections (momart_select_smallest_i64).
  int64_t topK = 0;
  /// Buffer copies bufferization could not avoid.
  int64_t copies = 0;
  /// Bytes read and written by all of the above, estimated (see
  /// collectStepStatistics).
  double bytes = 0;

  KernelCounts &operator+=(const KernelCounts &other);
};

struct FunctionStatistics {
  KernelCounts total;
  /// The most bytes of temporary buffers (activations, workspaces) live at
  /// once during a call, from the order of the function's allocations and
  /// deallocations; the caller's buffers (parameters, results) are not in it.
  double peakTemporaryBytes = 0;
  /// By the model part the kernels come from ("layers.0", ..., and
  /// "model" for the embedding, the output, the loss and the optimizer).
  std::map<std::string, KernelCounts> byPart;
};

/// Counts the kernels of every public function of a module that went through
/// addSharedLoweringPasses. Buffers are counted once per kernel that reads
/// or writes them; a dynamic dimension (the tokens of an expert or of a MoD
/// subset) is estimated as an even split of `tokens` over the static
/// dimensions before it, so [E, ?, d] counts tokens / E rows. The peak of
/// temporaries evaluates each allocation's sizes from the index arithmetic
/// that computes them, with `sequences` rows in the batch and the tokens
/// split evenly over `groups` expert groups (SizeEvaluator).
std::map<std::string, FunctionStatistics>
collectStepStatistics(mlir::ModuleOp module, int64_t tokens,
                      int64_t sequences, int64_t groups);

} // namespace momac

#endif // MOMAC_COMPILER_ANALYSIS_STEPSTATISTICS_H
