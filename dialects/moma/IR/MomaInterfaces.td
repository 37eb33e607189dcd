//===- MomaInterfaces.td - moma op interfaces --------------*- tablegen -*-===//

#ifndef MOMA_INTERFACES_TD
#define MOMA_INTERFACES_TD

include "mlir/IR/OpBase.td"

def Moma_DifferentiableOpInterface : OpInterface<"DifferentiableOpInterface"> {
  let cppNamespace = "::mlir::moma";
  let description = [{
    An op that knows its vector-Jacobian product. Reverse-mode autodiff
    (-moma-synthesize-grad) walks the forward pass backwards and asks each op
    for the gradients of its operands given the gradients of its results, so
    adding a differentiable op means adding its rule next to it.

    Routing decisions (which tokens an expert or a MoD layer takes) are not
    differentiated; the gates, which are router scores, are.
  }];
  let methods = [
    InterfaceMethod<[{
        Builds, with `builder`, the gradient of every operand given
        `resultGrads` (one per result; a null value means the result does not
        reach the loss). Fills `operandGrads` with one value per operand, null
        for an operand without a gradient (integers, routing indices).
      }],
      "::llvm::LogicalResult", "buildVJP",
      (ins "::mlir::OpBuilder &":$builder,
           "::mlir::ValueRange":$resultGrads,
           "::llvm::SmallVectorImpl<::mlir::Value> &":$operandGrads)>
  ];
}

#endif // MOMA_INTERFACES_TD
