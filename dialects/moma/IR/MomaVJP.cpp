//===- MomaVJP.cpp - Vector-Jacobian products of moma ops -----------------===//
//
// One rule per differentiable op (DifferentiableOpInterface). A rule emits the
// operands' gradients as moma ops, mostly the *_grad ops whose lowering holds
// the math; see MomaOps.td for each op's definition.
//
//===----------------------------------------------------------------------===//

#include "dialects/moma/IR/MomaOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"

using namespace mlir;
using namespace mlir::moma;

namespace {

/// Zeros of `like`'s type, with its dynamic sizes.
Value zerosLike(OpBuilder &b, Location loc, Value like) {
  auto type = cast<RankedTensorType>(like.getType());
  Value zero =
      arith::ConstantOp::create(b, loc, b.getZeroAttr(type.getElementType()));
  SmallVector<Value> dynamic;
  for (int64_t d = 0; d < type.getRank(); ++d)
    if (type.isDynamicDim(d))
      dynamic.push_back(tensor::DimOp::create(b, loc, like, d));
  return tensor::SplatOp::create(b, loc, zero, type, dynamic);
}

/// Starts a rule: no operand has a gradient until the rule says so.
void noGradients(Operation *op, SmallVectorImpl<Value> &operandGrads) {
  operandGrads.assign(op->getNumOperands(), Value());
}

} // namespace

LogicalResult EmbedOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                SmallVectorImpl<Value> &operandGrads) {
  noGradients(*this, operandGrads);
  if (!resultGrads[0])
    return success();
  // The table's gradient accumulates each token's row gradient.
  Value zeros = zerosLike(b, getLoc(), getTable());
  operandGrads[0] =
      ScatterAddTokensOp::create(b, getLoc(), zeros.getType(), resultGrads[0],
                                 zeros, getTokenIds(), Value());
  return success();
}

LogicalResult LinearOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                 SmallVectorImpl<Value> &operandGrads) {
  noGradients(*this, operandGrads);
  Value dy = resultGrads[0];
  if (!dy)
    return success();
  // y = x w^T: dx = dy w, dw = dy^T x.
  operandGrads[0] = MatmulOp::create(b, getLoc(), getInput().getType(), dy,
                                     getWeight(), false, false);
  operandGrads[1] = MatmulOp::create(b, getLoc(), getWeight().getType(), dy,
                                     getInput(), true, false);
  return success();
}

LogicalResult RMSNormOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                  SmallVectorImpl<Value> &operandGrads) {
  noGradients(*this, operandGrads);
  if (!resultGrads[0])
    return success();
  auto grad = RMSNormGradOp::create(
      b, getLoc(), getInput().getType(), getWeight().getType(), getInput(),
      getWeight(), resultGrads[0], getEpsilonAttr());
  operandGrads[0] = grad.getInputGrad();
  operandGrads[1] = grad.getWeightGrad();
  return success();
}

LogicalResult HeadLayerNormOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                        SmallVectorImpl<Value> &operandGrads) {
  noGradients(*this, operandGrads);
  if (!resultGrads[0])
    return success();
  auto grad = HeadLayerNormGradOp::create(
      b, getLoc(), getInput().getType(), getWeight().getType(),
      getWeight().getType(), getInput(), getWeight(), resultGrads[0],
      getEpsilonAttr());
  operandGrads[0] = grad.getInputGrad();
  operandGrads[1] = grad.getWeightGrad();
  operandGrads[2] = grad.getBiasGrad();
  return success();
}

LogicalResult RopeOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                               SmallVectorImpl<Value> &operandGrads) {
  noGradients(*this, operandGrads);
  if (!resultGrads[0])
    return success();
  // A rotation's gradient is the opposite rotation.
  operandGrads[0] = RopeOp::create(
      b, getLoc(), getType(), resultGrads[0], getPositions(), getNumHeadsAttr(),
      getThetaAttr(), getInverse() ? UnitAttr() : b.getUnitAttr());
  return success();
}

LogicalResult AttentionOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                    SmallVectorImpl<Value> &operandGrads) {
  noGradients(*this, operandGrads);
  if (!resultGrads[0])
    return success();
  Type type = getQuery().getType();
  auto grad = AttentionGradOp::create(b, getLoc(), type, type, type, getQuery(),
                                      getKey(), getValue(), getPositions(),
                                      getSequenceIds(), resultGrads[0],
                                      getNumHeadsAttr(), getScaleAttr());
  operandGrads[0] = grad.getQueryGrad();
  operandGrads[1] = grad.getKeyGrad();
  operandGrads[2] = grad.getValueGrad();
  return success();
}

LogicalResult SwiGLUOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                 SmallVectorImpl<Value> &operandGrads) {
  noGradients(*this, operandGrads);
  if (!resultGrads[0])
    return success();
  auto grad = SwiGLUGradOp::create(
      b, getLoc(), getInput().getType(), getW1().getType(), getW3().getType(),
      getW2().getType(), getInput(), getW1(), getW3(), getW2(), resultGrads[0]);
  operandGrads[0] = grad.getInputGrad();
  operandGrads[1] = grad.getW1Grad();
  operandGrads[2] = grad.getW3Grad();
  operandGrads[3] = grad.getW2Grad();
  return success();
}

LogicalResult RouterOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                 SmallVectorImpl<Value> &operandGrads) {
  noGradients(*this, operandGrads);
  if (!resultGrads[0])
    return success();
  auto grad = RouterGradOp::create(b, getLoc(), getInput().getType(),
                                   getWeight().getType(), getInput(),
                                   getWeight(), getScores(), resultGrads[0]);
  operandGrads[0] = grad.getInputGrad();
  operandGrads[1] = grad.getWeightGrad();
  return success();
}

LogicalResult GatherTokensOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                       SmallVectorImpl<Value> &operandGrads) {
  noGradients(*this, operandGrads);
  auto sourceType = cast<RankedTensorType>(getSource().getType());
  if (!resultGrads[0] || !isa<FloatType>(sourceType.getElementType()))
    return success();
  Value zeros = zerosLike(b, getLoc(), getSource());
  // Padding read zeros, so its gradient goes nowhere.
  operandGrads[0] = ScatterAddTokensOp::create(b, getLoc(), sourceType,
                                               resultGrads[0], zeros,
                                               getIndices(), Value(),
                                               getPadded());
  return success();
}

LogicalResult
ScatterAddTokensOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                             SmallVectorImpl<Value> &operandGrads) {
  noGradients(*this, operandGrads);
  Value dy = resultGrads[0];
  if (!dy)
    return success();
  // result = dest + scatter(weights * source): dest passes dy through.
  operandGrads[1] = dy;
  Type weightsGradType = getWeights() ? getWeights().getType() : Type();
  auto grad = ScatterAddTokensGradOp::create(b, getLoc(), getSource().getType(),
                                             weightsGradType, getSource(),
                                             getIndices(), getWeights(), dy,
                                             getPadded());
  operandGrads[0] = grad.getSourceGrad();
  if (getWeights())
    operandGrads[3] = grad.getWeightsGrad();
  return success();
}

/// Expert choice and MoD selection: (indices, gates) from scores; the
/// choice has no gradient, the gates (the chosen scores) do.
template <typename SelectionOp>
static LogicalResult selectionVJP(SelectionOp op, OpBuilder &b,
                                  ValueRange resultGrads,
                                  SmallVectorImpl<Value> &operandGrads) {
  noGradients(op, operandGrads);
  if (!resultGrads[1])
    return success();
  operandGrads[0] =
      GateGradOp::create(b, op.getLoc(), op.getScores().getType(),
                         op.getScores(), op.getIndices(), resultGrads[1]);
  return success();
}

LogicalResult ExpertChoiceOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                       SmallVectorImpl<Value> &operandGrads) {
  return selectionVJP(*this, b, resultGrads, operandGrads);
}

LogicalResult ModSelectOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                    SmallVectorImpl<Value> &operandGrads) {
  return selectionVJP(*this, b, resultGrads, operandGrads);
}

LogicalResult ModMergeOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                   SmallVectorImpl<Value> &operandGrads) {
  noGradients(*this, operandGrads);
  if (!resultGrads[0])
    return success();
  auto grad = ModMergeGradOp::create(b, getLoc(), getInput().getType(),
                                     getBlock().getType(), getGates().getType(),
                                     getInput(), getBlock(), getIndices(),
                                     getGates(), resultGrads[0]);
  operandGrads[0] = grad.getInputGrad();
  operandGrads[1] = grad.getBlockGrad();
  operandGrads[3] = grad.getGatesGrad();
  return success();
}

LogicalResult CrossEntropyOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                       SmallVectorImpl<Value> &operandGrads) {
  noGradients(*this, operandGrads);
  // Only the loss is optimized; the per-modality losses are reported.
  if (!resultGrads[0])
    return success();
  operandGrads[0] = CrossEntropyGradOp::create(
      b, getLoc(), getLogits().getType(), getLogits(), getTargets(),
      resultGrads[0], getZLossAttr());
  return success();
}

LogicalResult AuxRouterOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                    SmallVectorImpl<Value> &operandGrads) {
  noGradients(*this, operandGrads);
  if (!resultGrads[0])
    return success();
  // The input stays without a gradient: the model it comes from is frozen.
  auto grad = AuxRouterGradOp::create(b, getLoc(), getW1().getType(),
                                      getW2().getType(), getInput(), getW1(),
                                      getW2(), getScores(), resultGrads[0]);
  operandGrads[1] = grad.getW1Grad();
  operandGrads[2] = grad.getW2Grad();
  return success();
}

LogicalResult AuxRouterLossOp::buildVJP(OpBuilder &b, ValueRange resultGrads,
                                        SmallVectorImpl<Value> &operandGrads) {
  noGradients(*this, operandGrads);
  if (!resultGrads[0])
    return success();
  operandGrads[0] = AuxRouterLossGradOp::create(
      b, getLoc(), getPredictions().getType(), getPredictions(), getIndices(),
      resultGrads[0], getValid());
  return success();
}
