//===- Passes.td - moma dialect passes ---------------------*- tablegen -*-===//

#ifndef MOMA_TRANSFORMS_PASSES_TD
#define MOMA_TRANSFORMS_PASSES_TD

include "mlir/Pass/PassBase.td"

def MomaReuseModalityPartition
    : Pass<"moma-reuse-modality-partition", "::mlir::func::FuncOp"> {
  let summary = "Compute each token set's modality partition once";
  let description = [{
    The MoMa paper computes each token's modality group once and reuses the
    indices in every layer (its "modality token index reuse" optimization,
    which saves a device-to-host synchronization per layer). Layers emit one
    `moma.modality_partition` each; this pass replaces a partition by an
    earlier one that dominates it when both split the same tokens into the
    same groups.

    "The same tokens" is decided structurally: the same SSA value, or values
    computed by equivalent side-effect-free ops from the same tokens. Layers
    without Mixture-of-Depths all see the batch's token ids, so one partition
    serves them all. A MoD layer sees the tokens its own router selected
    (`moma.gather_tokens` of `moma.mod_select`'s indices), which differ from
    layer to layer, so its partition is kept.
  }];
  let dependentDialects = ["::mlir::moma::MomaDialect"];
  let statistics = [
    Statistic<"numReused", "num-reused",
              "modality partitions replaced by an earlier equivalent one">
  ];
}

#endif // MOMA_TRANSFORMS_PASSES_TD
