//===- Patterns.h - moma ops to linalg, one family per file -----*- C++ -*-===//
//
// The patterns of convert-moma-to-linalg (MomaToLinalg.cpp), one file per op
// family, each with its forward and gradient ops, as Triton's
// TritonGPUToLLVM does it. Shapes follow the op descriptions in MomaOps.td;
// the math follows shared/MODEL_SPEC.md. Kernels are linalg.generic ops so
// that the CPU target turns them into parallel loops and the CUDA target into
// GPU kernels from the same code; contractions stay recognizable for the GEMM
// library rewrite. Data-dependent routing steps are scf.for loops over
// tensors, which bufferize in place. The gradient patterns lower the backward
// ops of MomaVJP.cpp; each comment states the derivative it computes, and
// the end-to-end tests compare every parameter's gradient with PyTorch
// autograd of the reference model.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_COMPILER_CONVERSION_MOMATOLINALG_PATTERNS_H
#define MOMAC_COMPILER_CONVERSION_MOMATOLINALG_PATTERNS_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/PatternMatch.h"

namespace momac::lowering {

/// moma.shift_tokens, moma.token_positions, moma.embed and moma.rope
/// (TokensToLinalg.cpp).
void populateTokenLoweringPatterns(mlir::RewritePatternSet &patterns);

/// moma.rms_norm, moma.head_layer_norm and their gradients
/// (NormsToLinalg.cpp).
void populateNormLoweringPatterns(mlir::RewritePatternSet &patterns);

/// moma.linear, moma.matmul, moma.swiglu and its gradient
/// (FeedForwardToLinalg.cpp).
void populateFeedForwardLoweringPatterns(mlir::RewritePatternSet &patterns);

/// moma.attention, moma.attention_grad and moma.cached_attention
/// (AttentionToLinalg.cpp): online-softmax kernels per block of `blockRows`
/// query rows. `maxSequenceRows`: seq_len where the module has one (see
/// forEachSequence), else 0; `maxSequences`: the most sequences a batch
/// holds (see sequenceCount), else 0.
void populateAttentionLoweringPatterns(mlir::RewritePatternSet &patterns,
                                       int64_t maxSequenceRows,
                                       int64_t maxSequences,
                                       int64_t blockRows);

/// The expert routers, the modality partitions, expert choice and their
/// gradients (RoutingToLinalg.cpp).
void populateRoutingLoweringPatterns(mlir::RewritePatternSet &patterns);

/// Mixture-of-Depths selection and merge, and the merge's gradient
/// (MixtureOfDepthsToLinalg.cpp).
void populateMixtureOfDepthsLoweringPatterns(
    mlir::RewritePatternSet &patterns);

/// The auxiliary routers, causal routing, the routers' objective and
/// statistics, and their gradients (AuxRoutersToLinalg.cpp).
void populateAuxRouterLoweringPatterns(mlir::RewritePatternSet &patterns);

/// moma.gather_tokens, moma.scatter_add_tokens and its gradient
/// (DataMovementToLinalg.cpp).
void populateDataMovementLoweringPatterns(mlir::RewritePatternSet &patterns);

/// moma.cross_entropy and its gradient (CrossEntropyToLinalg.cpp).
void populateCrossEntropyLoweringPatterns(mlir::RewritePatternSet &patterns);

/// The gradient norm and the AdamW update (OptimizerToLinalg.cpp).
void populateOptimizerLoweringPatterns(mlir::RewritePatternSet &patterns);

/// Large splat constants and tensor.splat as fills (ConstantsToLinalg.cpp).
void populateConstantLoweringPatterns(mlir::RewritePatternSet &patterns);
/// Whether `op` is a splat constant that becomes a fill: the conversion
/// target keeps the others legal.
bool isLargeSplatConstant(mlir::arith::ConstantOp op);

} // namespace momac::lowering

#endif // MOMAC_COMPILER_CONVERSION_MOMATOLINALG_PATTERNS_H
