//===- SequenceHelpers.h - The rows of each sequence of a batch -*- C++ -*-===//
//
// Tokens are in ascending flat order, so a sequence's rows are contiguous in
// every token list; kernels that only mix the tokens of one sequence
// (attention) find them by their sequence ids and run once per sequence.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_COMPILER_CONVERSION_MOMATOLINALG_SEQUENCEHELPERS_H
#define MOMAC_COMPILER_CONVERSION_MOMATOLINALG_SEQUENCEHELPERS_H

#include "compiler/Conversion/MomaToLinalg/KernelBuilder.h"

namespace momac::lowering {

/// The number of sequences of nondecreasing `ids`: ids[n - 1] + 1, or 0
/// when there are no rows. With `maxSequences` > 0, a bound on every id + 1
/// (the batch's sequences, maxSequencesOf), that bound instead: a sequence
/// past the last id gets no rows and costs next to nothing, as one without
/// tokens between others does already (a Mixture-of-Depths layer's), and
/// the count is a constant, which a GPU step need not read back from the
/// device to size its grid.
mlir::OpFoldResult sequenceCount(KernelBuilder &kb, mlir::Value ids,
                                 int64_t maxSequences = 0);

/// Sequence `sequence`'s rows [start, start + length) of nondecreasing
/// `ids`. `maxRows`, when positive, bounds the length in the IR (see
/// forEachSequence).
struct SequenceRows {
  mlir::Value start, length;
};
SequenceRows rowsOfSequence(KernelBuilder &kb, mlir::Value ids,
                            mlir::Value sequence, int64_t maxRows);

/// Runs `body` once per sequence, in parallel over the sequences: `inputs`
/// are tensors whose row i belongs to sequence ids[i], `body` gets the rows
/// of one sequence ([len, ...] slices of each input) and returns [len, ...]
/// results, which land in the same rows of `outputs`. `ids` must be
/// nondecreasing (tokens in ascending flat order, as every moma op keeps
/// them), so that a sequence's rows are contiguous; sequences without rows
/// get empty slices. Work that only mixes tokens of one sequence (attention)
/// then costs the sum of the squares of the sequence lengths, not the square
/// of the batch.
///
/// `maxRows`, when positive, is a bound on a sequence's rows (seq_len): it
/// changes nothing here but states the bound in the IR, where a target that
/// sizes a sequence's temporaries statically (CUDA's per-block scratch)
/// reads it.
llvm::SmallVector<mlir::Value> forEachSequence(
    KernelBuilder &kb, mlir::Value ids, mlir::ValueRange inputs,
    mlir::ValueRange outputs, int64_t maxRows,
    llvm::function_ref<llvm::SmallVector<mlir::Value>(mlir::ValueRange)> body);

/// The largest seq_len of the module's moma.token_positions ops, or 0.
int64_t maxSequenceRowsOf(mlir::Operation *module);
/// The most sequences a moma.token_positions op of the module numbers
/// (its tokens over seq_len), or 0: a bound on every sequence id + 1.
int64_t maxSequencesOf(mlir::Operation *module);

} // namespace momac::lowering

#endif // MOMAC_COMPILER_CONVERSION_MOMATOLINALG_SEQUENCEHELPERS_H
