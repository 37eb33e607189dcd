//===- Passes.td - momac autodiff passes -------------------*- tablegen -*-===//

#ifndef MOMAC_AUTODIFF_PASSES_TD
#define MOMAC_AUTODIFF_PASSES_TD

include "mlir/Pass/PassBase.td"

def MomaSynthesizeGrad : Pass<"moma-synthesize-grad", "::mlir::ModuleOp"> {
  let summary = "Add @grad: the forward pass and its reverse-mode gradient";
  let description = [{
    For the module's @forward (parameters named by `moma.param`, results by
    `moma.result`), adds @grad with the same arguments, returning `loss`, the
    per-modality losses and `grad.<name>` for every parameter: the numerical
    contract of MODEL_SPEC section 8.

    The gradient is built in reverse from `loss`: each op on a path from a
    parameter to the loss contributes its vector-Jacobian product through
    DifferentiableOpInterface (moma ops carry their rules in MomaVJP.cpp;
    arith.addf, tensor.collapse_shape and tensor.splat get theirs as external
    models). Gradients reaching one value are summed. Parameters the loss
    does not depend on (auxiliary routers) get zeros.
  }];
  let options = [
    Option<"forwardName", "forward", "std::string", "\"forward\"",
           "The function to differentiate">,
    Option<"gradName", "grad", "std::string", "\"grad\"",
           "The name of the function to add">
  ];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::moma::MomaDialect",
    "::mlir::tensor::TensorDialect"
  ];
}

#endif // MOMAC_AUTODIFF_PASSES_TD
