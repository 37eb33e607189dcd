//===- KernelBuilder.h - Building blocks of the moma lowering ---*- C++ -*-===//
//
// What every op family's patterns (Patterns.h) build their kernels from:
// constants, empty and filled tensors, linalg.generic and scf.for nests,
// contractions, the activations and a few scalar helpers. Routing, sequence
// and attention-tile helpers have headers of their own (RoutingHelpers.h,
// SequenceHelpers.h, AttentionTiles.h).
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_COMPILER_CONVERSION_MOMATOLINALG_KERNELBUILDER_H
#define MOMAC_COMPILER_CONVERSION_MOMATOLINALG_KERNELBUILDER_H

#include "mlir/Dialect/Utils/StructuredOpsUtils.h"
#include "mlir/IR/AffineMap.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/PatternMatch.h"

namespace momac::lowering {

constexpr mlir::utils::IteratorType kPar = mlir::utils::IteratorType::parallel;
constexpr mlir::utils::IteratorType kRed =
    mlir::utils::IteratorType::reduction;

//===----------------------------------------------------------------------===//
// Building blocks
//===----------------------------------------------------------------------===//

/// The body of a contraction: acc + a * b (arguments a, b, acc). Narrower
/// operands (bf16 GEMM operands) are extended to the accumulator's type
/// first, so the products and the sum are in f32.
llvm::SmallVector<mlir::Value> multiplyAccumulate(mlir::OpBuilder &b,
                                                  mlir::Location loc,
                                                  mlir::ValueRange args);

/// A small builder for the kernels of the patterns: index and float
/// constants, empty and filled tensors, generic ops and loop nests, all at
/// one location.
class KernelBuilder {
public:
  KernelBuilder(mlir::PatternRewriter &rewriter, mlir::Location loc);

  mlir::PatternRewriter &b;
  mlir::Location loc;
  mlir::Type f32, i32;
  /// The element type GEMM operands are rounded to (f32: not rounded): the
  /// module's moma.gemm_operand_type, f32 when it asks none.
  mlir::Type gemmOperands;
  /// Whether rounded GEMM operands stay f32 tensors (the module's
  /// moma.gemm_operands_in_f32), so that the GEMMs run in f32.
  bool gemmOperandsInF32;

  mlir::Value index(int64_t value);
  mlir::Value f32Const(double value);
  mlir::Value f64Const(double value);
  mlir::Value i32Const(int32_t value);

  /// The size of dimension `d` of `tensor` as an index value.
  mlir::Value dim(mlir::Value tensor, int64_t d);
  /// Index values for the dynamic dimensions of `shape` taken from `sizes`.
  llvm::SmallVector<mlir::Value> dynamicOf(llvm::ArrayRef<int64_t> shape,
                                           mlir::ValueRange sizes);

  mlir::Value empty(llvm::ArrayRef<int64_t> shape, mlir::Type element,
                    mlir::ValueRange dynamic = {});
  mlir::Value filled(llvm::ArrayRef<int64_t> shape, mlir::Type element,
                     mlir::Value value, mlir::ValueRange dynamic = {});
  mlir::Value zeros(llvm::ArrayRef<int64_t> shape, mlir::Type element,
                    mlir::ValueRange dynamic = {});

  mlir::AffineMap map(unsigned numDims, llvm::ArrayRef<unsigned> results);
  mlir::AffineMap identity(unsigned numDims);

  using Body = llvm::function_ref<llvm::SmallVector<mlir::Value>(
      mlir::OpBuilder &, mlir::Location, mlir::ValueRange)>;
  /// A linalg.generic; `body` returns the values to yield.
  mlir::ValueRange generic(mlir::ValueRange inputs, mlir::ValueRange outputs,
                           llvm::ArrayRef<mlir::AffineMap> maps,
                           llvm::ArrayRef<mlir::utils::IteratorType> iterators,
                           Body body);

  /// A contraction `init += lhs * rhs` over the loops of `maps` (a loop in
  /// the result is parallel, one only in the operands a reduction), as the
  /// named op linalg.contract: every target's library-call mapping reads
  /// its batch, M, N and K loops from the op (linalg::inferContractionDims).
  /// Narrower operands (bf16) are widened to the accumulator's type.
  mlir::Value contract(mlir::Value lhs, mlir::Value rhs, mlir::Value init,
                       llvm::ArrayRef<mlir::AffineMap> maps);

  /// An element-wise map of same-shape tensors into a new tensor of
  /// `element` type.
  mlir::Value elementwise(mlir::ValueRange inputs, mlir::Type element,
                          Body body);

  llvm::SmallVector<mlir::Value> dims(mlir::Value tensor);

  /// scf.for loops from 0 to each of `upper` carrying `state`; returns the
  /// final state.
  llvm::SmallVector<mlir::Value>
  loops(mlir::ValueRange upper, mlir::ValueRange state,
        llvm::function_ref<llvm::SmallVector<mlir::Value>(
            mlir::OpBuilder &, mlir::Location, mlir::ValueRange,
            mlir::ValueRange)>
            body);

  /// `x` as a GEMM operand: rounded to the module's GEMM operand type (an
  /// element-wise kernel that fusion folds into x's producer), or x itself.
  /// With gemmOperandsInF32 the rounded values stay f32.
  mlir::Value gemmOperand(mlir::Value x);

  /// op(lhs) op(rhs), where op transposes the last two dimensions when
  /// asked, with an optional leading expert dimension; operands in the
  /// module's GEMM operand type, accumulated in f32.
  mlir::Value matmul(mlir::Value lhs, mlir::Value rhs, bool transposeLhs,
                     bool transposeRhs);
  /// The same in f32 whatever the GEMM operand type: the routers' logits
  /// and their gradients stay f32 (MODEL_SPEC section 7).
  mlir::Value matmulInF32(mlir::Value lhs, mlir::Value rhs, bool transposeLhs,
                          bool transposeRhs);

  mlir::Value matmulOf(mlir::Value lhs, mlir::Value rhs, bool transposeLhs,
                       bool transposeRhs);

  /// x w^T: [.., m, k] x [.., n, k] -> [.., m, n] (linear maps).
  mlir::Value contractTransposed(mlir::Value x, mlir::Value w);

  /// [n, H * hd] -> [n, H, hd] and back, for per-head kernels.
  mlir::Value splitHeads(mlir::Value x, int64_t heads);
  mlir::Value joinHeads(mlir::Value x, mlir::RankedTensorType type);
};

//===----------------------------------------------------------------------===//
// Activations
//===----------------------------------------------------------------------===//

mlir::Value sigmoid(mlir::OpBuilder &b, mlir::Location loc, mlir::Value x);

/// sigmoid applied to every element of `x`.
mlir::Value sigmoidOf(KernelBuilder &kb, mlir::Value x);

/// The gradient of z through s = sigmoid(z), given ds and s: ds s (1 - s).
mlir::Value sigmoidBackward(KernelBuilder &kb, mlir::Value scoresGrad,
                            mlir::Value scores);

mlir::Value silu(mlir::OpBuilder &b, mlir::Location loc, mlir::Value x);

/// The derivative of silu at z: s (1 + z (1 - s)) with s = sigmoid(z).
mlir::Value siluDerivative(mlir::OpBuilder &b, mlir::Location loc,
                           mlir::Value z);

//===----------------------------------------------------------------------===//
// Scalars, ranges and rows
//===----------------------------------------------------------------------===//

mlir::Value toIndex(mlir::OpBuilder &b, mlir::Location loc,
                    mlir::Value i32Value);
mlir::Value toI32(mlir::OpBuilder &b, mlir::Location loc,
                  mlir::Value indexValue);

/// True when `id` lies in one of the half-open ranges "lo0, hi0, lo1, ...".
mlir::Value inRanges(mlir::OpBuilder &b, mlir::Location loc, mlir::Value id,
                     llvm::ArrayRef<int64_t> bounds);

/// The element of a 0-d tensor, and a scalar as a 0-d f32 tensor.
mlir::Value scalarOf(KernelBuilder &kb, mlir::Value tensor0d);
mlir::Value tensorOf(KernelBuilder &kb, mlir::Value scalar);

/// The size of `x`'s first dimension where it is dynamic (none where it is
/// static): the dynamic sizes of a row-wise result.
llvm::SmallVector<mlir::Value> rowsOf(KernelBuilder &kb, mlir::Value x);

} // namespace momac::lowering

#endif // MOMAC_COMPILER_CONVERSION_MOMATOLINALG_KERNELBUILDER_H
