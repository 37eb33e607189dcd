//===- BufferGemm.h - Contractions on buffers as GEMMs ----------*- C++ -*-===//
//
// What every target's GEMM library call needs to know about a bufferized
// `C += A B` contraction (projections, stacked experts, attention per head,
// and their gradients): which loops are batch, M, N and K, whether A and B
// are read transposed, where each operand's leading dimension comes from,
// and whether C was just zeroed (beta = 0). The CPU target turns a match
// into BLAS/oneDNN calls split over its threads
// (compiler/Target/CPU/LinalgToBlas.cpp), the CUDA target into cuBLAS
// strided-batched calls (compiler/Target/CUDA/LinalgToCublas.cpp).
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_COMPILER_CODEGEN_BUFFERGEMM_H
#define MOMAC_COMPILER_CODEGEN_BUFFERGEMM_H

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/IR/Builders.h"

namespace momac {

/// One operand of the GEMM: which memref dimension each loop sits in.
struct GemmOperand {
  mlir::Value buffer;
  mlir::MemRefType type;
  llvm::SmallVector<int64_t> strides;
  mlir::AffineMap map;

  /// The memref dimension of loop `loop`, or -1.
  int64_t dimOf(unsigned loop) const;
  /// The static stride of loop `loop` (0 when absent, dynamic possible).
  int64_t strideOf(unsigned loop) const;
};

/// A contraction `C (+)= A B` on buffers in BLAS terms (row-major C).
struct BufferGemm {
  mlir::linalg::LinalgOp op;
  GemmOperand a, b, c;
  /// Loops in A, B and C (experts, heads), outermost first.
  llvm::SmallVector<unsigned> batchLoops;
  unsigned m, n, k;
  /// A is read as [K, M] (unit stride along M), B as [N, K].
  bool transA, transB;
  /// The loops whose strides are A's, B's and C's leading dimensions.
  unsigned ldaLoop, ldbLoop, ldcLoop;
  /// A and B are bf16 (widened in the body), C f32.
  bool bf16;
  /// The zero fill of C right before the contraction (only side-effect-free
  /// ops between), or null: a library call with beta = 0 replaces both.
  mlir::linalg::FillOp zeroFill;
};

/// `op` as a GEMM: f32 C += f32 A B, or f32 C += bf16 A B, with one unit
/// stride in each of A's and B's non-batch dimensions and C row major;
/// failure for any other op.
mlir::FailureOr<BufferGemm> matchBufferGemm(mlir::linalg::LinalgOp op);

/// Addresses and sizes of a matched GEMM's operands, read from the buffers'
/// metadata at the insertion point (identical on every target: a device
/// buffer's aligned pointer is a device address).
class GemmAddressing {
public:
  GemmAddressing(mlir::OpBuilder &builder, const BufferGemm &gemm);

  /// The size of loop `loop` (index).
  mlir::Value sizeOf(unsigned loop);
  /// The stride, in elements, of `operand` along `loop` (index).
  mlir::Value strideOf(const GemmOperand &operand, unsigned loop) const;
  /// A's, B's, C's leading dimensions (index): the strides of ldaLoop, ...,
  /// raised to the row length (a size-1 dimension may have any stride;
  /// BLAS libraries ask at least the row length).
  mlir::Value lda(), ldb(), ldc();
  /// The address (!llvm.ptr) of `operand`'s element at `batchIndices` of
  /// the batch loops and `starts` (loop, index) of the others; omitted
  /// loops start at 0.
  mlir::Value pointer(mlir::OpBuilder &builder, const GemmOperand &operand,
                      mlir::ValueRange batchIndices,
                      llvm::ArrayRef<std::pair<unsigned, mlir::Value>> starts =
                          {}) const;

private:
  struct View {
    mlir::Value aligned;
    /// Op handles are values; mutable so that const lookups can query them.
    mutable mlir::memref::ExtractStridedMetadataOp metadata;
  };
  const View &viewOf(const GemmOperand &operand) const;

  mlir::OpBuilder &builder;
  const BufferGemm &gemm;
  mlir::Location loc;
  View viewA, viewB, viewC;
};

} // namespace momac

#endif // MOMAC_COMPILER_CODEGEN_BUFFERGEMM_H
