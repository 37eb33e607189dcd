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
    does not depend on (auxiliary routers) get zeros. Float arguments marked
    `moma.no_grad` (the router noise) are data: they get no gradient.
  }];
  let options = [
    Option<"forwardName", "forward", "std::string", "\"forward\"",
           "The function to differentiate">,
    Option<"gradName", "grad", "std::string", "\"grad\"",
           "The name of the function to add">,
    Option<"lossName", "loss", "std::string", "\"loss\"",
           "The result to differentiate">,
    Option<"reportAll", "report-all", "bool", "false",
           "Return every result of the function with the gradients (by "
           "default: the loss and the loss.<modality> results)">
  ];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::moma::MomaDialect",
    "::mlir::tensor::TensorDialect"
  ];
}

def MomaSynthesizeOptimizerStep
    : Pass<"moma-synthesize-optimizer-step", "::mlir::ModuleOp"> {
  let summary = "Add @optimizer_step: clipping and AdamW for every parameter";
  let description = [{
    Adds @optimizer_step, the update of MODEL_SPEC section 7 for the trained
    parameters of @forward (all but the auxiliary routers, which section 6
    trains separately). Arguments: each parameter `<name>`, its gradient
    `grad.<name>`, its moments `optim.m.<name>` and `optim.v.<name>`, and
    `schedule` = [lr(t), 1 - beta1^t, 1 - beta2^t], which the runtime computes
    from the step number. Results: the updated parameters and moments under
    the same names, and `grad_norm`, the global norm before clipping. Each
    update is element-wise, so the runtime passes the same buffers for a
    tensor and its update. When the norm is not finite (a NaN or Inf in some
    gradient), nothing is updated: the runtime, which reads `grad_norm` to
    log it, then stops or skips the step without scanning the gradients.

    Weight decay follows the name rule of section 7 (lib/config).
  }];
  let options = [
    Option<"beta1", "beta1", "double", "0.9", "AdamW beta1">,
    Option<"beta2", "beta2", "double", "0.95", "AdamW beta2">,
    Option<"eps", "eps", "double", "1e-5", "AdamW epsilon">,
    Option<"weightDecay", "weight-decay", "double", "0.1",
           "Decoupled weight decay of the decayed parameters">,
    Option<"gradClip", "grad-clip", "double", "1.0",
           "Global-norm clipping threshold (0 disables clipping)">,
    Option<"forwardName", "forward", "std::string", "\"forward\"",
           "The function whose parameters are trained">,
    Option<"stepName", "step", "std::string", "\"optimizer_step\"",
           "The name of the function to add">,
    Option<"auxRouters", "aux-routers", "bool", "false",
           "Update exactly the auxiliary routers (section 6: trained on a "
           "frozen model, without weight decay) instead of every other "
           "parameter">
  ];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::moma::MomaDialect",
    "::mlir::tensor::TensorDialect"
  ];
}

def MomaSynthesizeShardedStep
    : Pass<"moma-synthesize-sharded-step", "::mlir::ModuleOp"> {
  let summary = "Add the entry points of a fully sharded (FSDP) training step";
  let description = [{
    For `momac --fsdp`. Adds:
    - @fsdp_grad, a copy of @grad whose parameters and gradients are
      sharded across ranks. It is marked `moma.sharded_parameters`; every
      parameter argument and gradient result carries its FSDP unit
      (`moma.shard_unit`, an index into the function's `moma.shard_units`)
      and its offset in the unit's flat buffer (`moma.shard_offset`), as
      lib/config/ShardUnits.h plans them. -moma-shard-parameters later
      turns them into gathers and reduce-scatters; the runtime owns the
      shards.
    - @fsdp_grad_norm: the L2 norm of one `chunk`-element slice of a
      gradient shard. The runtime sums the squares of its slices' norms,
      all-reduces the sum over the ranks and clips with the global norm.
    - @fsdp_adamw_decayed and @fsdp_adamw_undecayed: AdamW (MODEL_SPEC
      section 7) of one `chunk`-element slice of a rank's shards, with and
      without weight decay, given the clipping factor `clip`; updated in
      place like @optimizer_step's tensors.
  }];
  let options = [
    Option<"beta1", "beta1", "double", "0.9", "AdamW beta1">,
    Option<"beta2", "beta2", "double", "0.95", "AdamW beta2">,
    Option<"eps", "eps", "double", "1e-5", "AdamW epsilon">,
    Option<"weightDecay", "weight-decay", "double", "0.1",
           "Decoupled weight decay of the decayed parameters">,
    Option<"chunkElements", "chunk", "int64_t", "65536",
           "Elements of one optimizer slice">,
    Option<"gradName", "grad", "std::string", "\"grad\"",
           "The gradient function to shard">
  ];
  let dependentDialects = [
    "::mlir::moma::MomaDialect",
    "::mlir::tensor::TensorDialect"
  ];
}

#endif // MOMAC_AUTODIFF_PASSES_TD
