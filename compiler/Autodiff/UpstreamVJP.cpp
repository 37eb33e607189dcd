//===- UpstreamVJP.cpp - VJP rules for upstream ops -----------------------===//

#include "compiler/Autodiff/Passes.h"

#include "dialects/moma/IR/MomaOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

using namespace mlir;

namespace {

/// x + y: both operands receive the result's gradient.
struct AddFVJP
    : public moma::DifferentiableOpInterface::ExternalModel<AddFVJP,
                                                            arith::AddFOp> {
  LogicalResult buildVJP(Operation *op, OpBuilder &, ValueRange resultGrads,
                         SmallVectorImpl<Value> &operandGrads) const {
    operandGrads.assign(2, resultGrads[0]);
    return success();
  }
};

/// A reshape's gradient is the inverse reshape (static shapes: the 1-expert
/// weights [1, f, d] -> [f, d]).
struct CollapseShapeVJP
    : public moma::DifferentiableOpInterface::ExternalModel<
          CollapseShapeVJP, tensor::CollapseShapeOp> {
  LogicalResult buildVJP(Operation *op, OpBuilder &b, ValueRange resultGrads,
                         SmallVectorImpl<Value> &operandGrads) const {
    auto collapse = cast<tensor::CollapseShapeOp>(op);
    operandGrads.assign(1, Value());
    if (!resultGrads[0])
      return success();
    if (!collapse.getSrcType().hasStaticShape())
      return op->emitError() << "gradient of a dynamic collapse_shape";
    operandGrads[0] = tensor::ExpandShapeOp::create(
        b, op->getLoc(), collapse.getSrcType(), resultGrads[0],
        collapse.getReassociationIndices());
    return success();
  }
};

/// A splat of a constant (the zeros a combine starts from) passes nothing on.
struct SplatVJP
    : public moma::DifferentiableOpInterface::ExternalModel<SplatVJP,
                                                            tensor::SplatOp> {
  LogicalResult buildVJP(Operation *op, OpBuilder &, ValueRange,
                         SmallVectorImpl<Value> &operandGrads) const {
    operandGrads.assign(op->getNumOperands(), Value());
    return success();
  }
};

} // namespace

void momac::registerUpstreamVJPModels(DialectRegistry &registry) {
  registry.addExtension(+[](MLIRContext *context, arith::ArithDialect *) {
    arith::AddFOp::attachInterface<AddFVJP>(*context);
  });
  registry.addExtension(+[](MLIRContext *context, tensor::TensorDialect *) {
    tensor::CollapseShapeOp::attachInterface<CollapseShapeVJP>(*context);
    tensor::SplatOp::attachInterface<SplatVJP>(*context);
  });
}
