//===- MomaDialect.td - The moma dialect -------------------*- tablegen -*-===//

#ifndef MOMA_DIALECT_TD
#define MOMA_DIALECT_TD

include "mlir/IR/OpBase.td"

def Moma_Dialect : Dialect {
  let name = "moma";
  let cppNamespace = "::mlir::moma";
  let summary = "Modality-aware sparse transformers (MoMa) on tensors";
  let description = [{
    The moma dialect states the model-level facts of an early-fusion
    transformer with modality-aware experts: which tokens belong to which
    modality group (`moma.modality_partition`), which tokens each expert
    chooses (`moma.expert_choice`), which tokens a Mixture-of-Depths layer
    processes (`moma.mod_select`, `moma.mod_merge`), and the transformer's
    compute over packed, variable-length token sets (`moma.attention` with
    per-token positions and sequence ids).

    Ops work on tensors with value semantics. Token dimensions that depend on
    routing are dynamic (`tensor<?x512xf32>`); everything else is static. Token
    index tensors are `i32` and always refer to rows of the operand they index.
    The math of every op is that of shared/MODEL_SPEC.md.
  }];
  let dependentDialects = [
    "::mlir::arith::ArithDialect",
    "::mlir::tensor::TensorDialect"
  ];
}

class Moma_Op<string mnemonic, list<Trait> traits = []>
    : Op<Moma_Dialect, mnemonic, traits>;

#endif // MOMA_DIALECT_TD
