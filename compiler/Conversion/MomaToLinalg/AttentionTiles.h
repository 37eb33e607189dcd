//===- AttentionTiles.h - Tiles of the online-softmax attention -*- C++ -*-===//
//
// The pieces moma.attention's and moma.attention_grad's kernels are made of
// (AttentionToLinalg.cpp, whose file comment gives the recurrence): blocks
// of `blockRows` query and key rows of one head of one sequence, their tiles
// of masked scores and probabilities, each query row's log-sum-exp by the
// online recurrence, and the parallel loop over (sequence, head, query
// block).
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_COMPILER_CONVERSION_MOMATOLINALG_ATTENTIONTILES_H
#define MOMAC_COMPILER_CONVERSION_MOMATOLINALG_ATTENTIONTILES_H

#include "compiler/Conversion/MomaToLinalg/KernelBuilder.h"

namespace momac::lowering {

/// Rows [row, row + rows) and columns [col, col + cols) of matrix `x`.
mlir::Value blockOf(KernelBuilder &kb, mlir::Value x, mlir::OpFoldResult row,
                    mlir::OpFoldResult rows, mlir::OpFoldResult col,
                    int64_t cols);

/// Elements [row, row + rows) of vector `x`.
mlir::Value rangeOf(KernelBuilder &kb, mlir::Value x, mlir::OpFoldResult row,
                    mlir::OpFoldResult rows);

/// Rows [row, row + rows) of column `col` of matrix `x`, as a vector.
mlir::Value columnOf(KernelBuilder &kb, mlir::Value x, mlir::OpFoldResult row,
                     mlir::OpFoldResult rows, mlir::OpFoldResult col);

/// The rows of block `block` of a `length`-row sequence:
/// min(blockRows, max(0, length - block * blockRows)). The outer min states
/// the block's bound in the IR (CUDA sizes a tile's temporaries by it).
mlir::Value blockLength(KernelBuilder &kb, mlir::Value length,
                        mlir::Value block, int64_t blockRows);

/// index * factor and a + b, on index values.
mlir::Value times(KernelBuilder &kb, mlir::Value index, int64_t factor);
mlir::Value plus(KernelBuilder &kb, mlir::Value a, mlir::Value b);

/// An scf.for from `lower` to `upper` carrying `init`; `body` gets the
/// induction variable and the state and returns the next state.
llvm::SmallVector<mlir::Value>
forLoop(KernelBuilder &kb, mlir::Value lower, mlir::Value upper,
        mlir::ValueRange init,
        llvm::function_ref<llvm::SmallVector<mlir::Value>(mlir::Value,
                                                          mlir::ValueRange)>
            body);

/// [rows, cols] of f32, dynamic in both.
mlir::Value matrixInit(KernelBuilder &kb, mlir::Value rows, mlir::Value cols,
                       bool zero);
mlir::Value vectorInit(KernelBuilder &kb, mlir::Value rows);

/// One head's tile of scaled, masked scores: t[i, j] = scale q[i] . k[j]
/// where key j's position is not after query i's, else -inf. q [qn, hd] and
/// k [kn, hd] are of one sequence.
mlir::Value maskedScores(KernelBuilder &kb, mlir::Value q, mlir::Value k,
                         mlir::Value queryPositions, mlir::Value keyPositions,
                         double scale);

/// Where one query block and one head of one sequence are: the query rows
/// [row, row + rows) of the flat batch, the sequence's first row, and the
/// head's columns [col, col + headDim).
struct QueryBlock {
  mlir::Value sequenceStart, row, rows, head, col;
};

/// The rows of one head in a key block that a query block sees: the
/// sequence's rows from block `index` on, at most blockRows of them, never
/// past the query block's last row.
struct KeyBlock {
  mlir::Value row, rows, key, value, positions;
};
KeyBlock keyBlockOf(KernelBuilder &kb, const QueryBlock &block,
                    mlir::Value index, mlir::Value k, mlir::Value v,
                    mlir::Value positions, int64_t headDim, int64_t blockRows);

/// The key blocks query block `index` sees: 0 .. index (keys in later blocks
/// are later tokens); none when the block is empty.
mlir::Value visibleKeyBlocks(KernelBuilder &kb, const QueryBlock &block,
                             mlir::Value index);

/// Softmax probabilities of a tile of masked scores, p = exp(t - lse) with
/// each query row's log-sum-exp: 0 where masked.
mlir::Value probabilities(KernelBuilder &kb, mlir::Value t,
                          mlir::Value logSumExp);

/// dp[i, j] = sum_c dout[i, c] v[j, c] for a tile; loops (i, j, c).
mlir::Value outputGradScores(KernelBuilder &kb, mlir::Value outputGrad,
                             mlir::Value value);

/// Each query row's log-sum-exp of its masked scores, lse = m + log l, by
/// the online recurrence over the key blocks it sees (AttentionToLinalg.cpp's
/// file comment): the softmax statistics without a row of scores ever whole.
/// `keyBlocks`: visibleKeyBlocks; `query`, `queryPositions`: the block's
/// rows; `k`, `v` [n, H * hd] GEMM operands.
mlir::Value rowLogSumExp(KernelBuilder &kb, const QueryBlock &block,
                         mlir::Value keyBlocks, mlir::Value query,
                         mlir::Value queryPositions, mlir::Value k,
                         mlir::Value v, mlir::Value positions, int64_t headDim,
                         int64_t blockRows, double scale);

/// A parallel loop over (sequence, head, query block), each iteration
/// given its QueryBlock and its query block index; `body` returns, for
/// each of `outputs` [n, ...], the tile to write and where (row offset,
/// rows, column offset, columns; a vector result writes one column).
/// `maxRows` and `maxSequences` bound a sequence's rows and the batch's
/// sequences where positive (rowsOfSequence, sequenceCount).
struct TileWrite {
  mlir::Value tile;
  mlir::OpFoldResult col;
  int64_t cols; // 0: `tile` is a vector written into column `col`
};
llvm::SmallVector<mlir::Value> forEachQueryBlock(
    KernelBuilder &kb, mlir::Value sequenceIds, mlir::ValueRange outputs,
    int64_t heads, int64_t headDim, int64_t maxRows, int64_t maxSequences,
    int64_t blockRows,
    llvm::function_ref<llvm::SmallVector<TileWrite>(
        const QueryBlock &, mlir::Value, mlir::ValueRange)>
        body);

} // namespace momac::lowering

#endif // MOMAC_COMPILER_CONVERSION_MOMATOLINALG_ATTENTIONTILES_H
