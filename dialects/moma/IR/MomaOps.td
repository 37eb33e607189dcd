//===- MomaOps.td - moma dialect operations ----------------*- tablegen -*-===//

#ifndef MOMA_OPS_TD
#define MOMA_OPS_TD

include "dialects/moma/IR/MomaDialect.td"
include "dialects/moma/IR/MomaInterfaces.td"
include "mlir/IR/CommonAttrConstraints.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

//===----------------------------------------------------------------------===//
// Type constraints
//===----------------------------------------------------------------------===//

def Moma_Activations : RankedTensorOf<[F32]>;
def Moma_FloatMatrix : TensorRankOf<[F32], [2]>;
def Moma_FloatVector : TensorRankOf<[F32], [1]>;
def Moma_FloatScalar : TensorRankOf<[F32], [0]>;
def Moma_TokenIndices : RankedTensorOf<[I32]>;
def Moma_TokenVector : TensorRankOf<[I32], [1]>;

def Moma_PositiveF64 : ConfinedAttr<F64Attr, [
    AttrConstraint<CPred<"::llvm::cast<::mlir::FloatAttr>($_self).getValueAsDouble() > 0">,
                   "whose value is > 0">]>;
def Moma_NonNegativeF64 : ConfinedAttr<F64Attr, [
    AttrConstraint<CPred<"::llvm::cast<::mlir::FloatAttr>($_self).getValueAsDouble() >= 0">,
                   "whose value is >= 0">]>;
def Moma_PositiveI64 : ConfinedAttr<I64Attr, [IntPositive]>;

//===----------------------------------------------------------------------===//
// Token layout
//===----------------------------------------------------------------------===//

def Moma_ShiftTokensOp : Moma_Op<"shift_tokens",
    [Pure, AllTypesMatch<["inputs", "targets"]>]> {
  let summary = "split a [B, S+1] batch into flat inputs and next-token targets";
  let description = [{
    Given token ids `T` of shape [B, S+1], yields the flat inputs
    `x[b*S + s] = T[b, s]` and targets `y[b*S + s] = T[b, s + 1]`.

    ```mlir
    %x, %y = moma.shift_tokens %tokens : tensor<2x9xi32> -> tensor<16xi32>
    ```
  }];
  let arguments = (ins TensorRankOf<[I32], [2]>:$tokens);
  let results = (outs Moma_TokenVector:$inputs, Moma_TokenVector:$targets);
  let assemblyFormat = [{
    $tokens attr-dict `:` type($tokens) `->` type($inputs)
  }];
  let hasVerifier = 1;
}

def Moma_TokenPositionsOp : Moma_Op<"token_positions",
    [Pure, AllTypesMatch<["positions", "sequence_ids"]>]> {
  let summary = "position and sequence id of every flat token";
  let description = [{
    For N = B * seq_len flat tokens, `positions[n] = n mod seq_len` and
    `sequence_ids[n] = n div seq_len`. Attention and RoPE read these, so token
    subsets (Mixture-of-Depths) keep each token's place by gathering them.

    ```mlir
    %pos, %seq = moma.token_positions seq_len = 8 : tensor<16xi32>
    ```
  }];
  let arguments = (ins Moma_PositiveI64:$seq_len);
  let results = (outs Moma_TokenVector:$positions,
                      Moma_TokenVector:$sequence_ids);
  let assemblyFormat = [{
    `seq_len` `=` $seq_len attr-dict `:` type($positions)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Routing
//===----------------------------------------------------------------------===//

def Moma_ModalityPartitionOp : Moma_Op<"modality_partition", [Pure]> {
  let summary = "split tokens into modality groups by token id";
  let description = [{
    Result `g` holds, in ascending order, the positions i in `token_ids` whose
    id lies in one of group g's half-open ranges. `group_ranges[g]` lists
    `lo0, hi0, lo1, hi1, ...`; the ranges of all groups are disjoint, so each
    token lands in at most one group. The partition depends only on the ids,
    so layers that see the same tokens can share one partition
    (`-moma-reuse-modality-partition`).

    ```mlir
    %text, %image = moma.modality_partition %ids
        groups ["text", "image"] ranges [array<i64: 0, 4, 8196, 65536>, array<i64: 4, 8196>]
        : tensor<16xi32> -> tensor<?xi32>, tensor<?xi32>
    ```
  }];
  let arguments = (ins Moma_TokenVector:$token_ids,
                       StrArrayAttr:$group_names,
                       TypedArrayAttrBase<DenseI64ArrayAttr,
                           "array of token-range lists">:$group_ranges);
  let results = (outs Variadic<Moma_TokenVector>:$indices);
  let assemblyFormat = [{
    $token_ids `groups` $group_names `ranges` $group_ranges attr-dict
    `:` type($token_ids) `->` type($indices)
  }];
  let hasVerifier = 1;
}

def Moma_PaddedModalityPartitionOp : Moma_Op<"padded_modality_partition", [Pure]> {
  let summary = "split tokens into modality groups, each list padded to n";
  let description = [{
    As `moma.modality_partition`, but every group's list is as long as
    `token_ids` (n): its tokens in ascending order, then n in every slot
    past them (padding, which a `padded` `moma.gather_tokens` reads as a
    zero row and a `padded` `moma.scatter_add_tokens` drops). `counts[g]` is
    group g's token count. No shape depends on the ids, so nothing has to
    wait for the counts: a GPU step keeps them on the device and sizes its
    launches by n (the CUDA target's MoD layers, whose token sets change
    from layer to layer).

    ```mlir
    %text, %image, %counts = moma.padded_modality_partition %ids
        groups ["text", "image"] ranges [array<i64: 0, 4, 8196, 65536>, array<i64: 4, 8196>]
        : tensor<?xi32> -> (tensor<?xi32>, tensor<?xi32>), tensor<2xi32>
    ```
  }];
  let arguments = (ins Moma_TokenVector:$token_ids,
                       StrArrayAttr:$group_names,
                       TypedArrayAttrBase<DenseI64ArrayAttr,
                           "array of token-range lists">:$group_ranges);
  let results = (outs Variadic<Moma_TokenVector>:$indices,
                      Moma_TokenVector:$counts);
  let assemblyFormat = [{
    $token_ids `groups` $group_names `ranges` $group_ranges attr-dict
    `:` type($token_ids) `->` `(` type($indices) `)` `,` type($counts)
  }];
  let hasVerifier = 1;
}

def Moma_RouterOp : Moma_Op<"router", [Pure, DeclareOpInterfaceMethods<Moma_DifferentiableOpInterface>]> {
  let summary = "sigmoid router scores";
  let description = [{
    `scores = sigmoid(input weight^T + noise)`, shape [n, E]. `noise`, when
    present, is added to the logits: training with `moe.gumbel` passes
    G' - G'' (two standard Gumbel samples, MODEL_SPEC section 4), so the
    noisy score is both the selection score and the gate; zero noise is
    evaluation routing. The noise gets no gradient.

    ```mlir
    %s = moma.router %x, %w : tensor<?x64xf32>, tensor<4x64xf32> -> tensor<?x4xf32>
    %n = moma.router %x, %w noise %g
        : tensor<?x64xf32>, tensor<4x64xf32>, tensor<?x4xf32> -> tensor<?x4xf32>
    ```
  }];
  let arguments = (ins Moma_FloatMatrix:$input, Moma_FloatMatrix:$weight,
                       Optional<Moma_FloatMatrix>:$noise);
  let results = (outs Moma_FloatMatrix:$scores);
  let assemblyFormat = [{
    $input `,` $weight (`noise` $noise^)? attr-dict
    `:` type($input) `,` type($weight) (`,` type($noise)^)? `->` type($scores)
  }];
  let hasVerifier = 1;
}

def Moma_ExpertChoiceOp : Moma_Op<"expert_choice", [Pure, DeclareOpInterfaceMethods<Moma_DifferentiableOpInterface>]> {
  let summary = "each expert takes its top-k tokens";
  let description = [{
    For scores [n, E], each expert e takes the k = min(n, ceil(c * n / E))
    tokens with the highest `scores[:, e]` (ties to the lower index),
    computed in IEEE double. `indices[e]` lists the chosen rows in descending
    score order and `gates[e]` their scores. Routing is not differentiated;
    the gates are.

    With `valid` (a one-element count, from `moma.padded_modality_partition`)
    only the first `valid[0]` rows are tokens: k takes n = valid[0], while
    the results keep the width k would have for all n rows, and each slot
    past k holds row n - 1 at gate 0. That row is padding whenever such a
    slot exists (k falls short of the width only when valid[0] < n), so a
    `padded` gather reads zeros there and the slot adds nothing.

    ```mlir
    %idx, %gate = moma.expert_choice %s capacity_factor = 1.0
        : tensor<?x4xf32> -> tensor<4x?xi32>, tensor<4x?xf32>
    %pidx, %pgate = moma.expert_choice %s valid %count capacity_factor = 1.0
        : tensor<?x4xf32>, tensor<1xi32> -> tensor<4x?xi32>, tensor<4x?xf32>
    ```
  }];
  let arguments = (ins Moma_FloatMatrix:$scores,
                       Optional<TensorRankOf<[I32], [1]>>:$valid,
                       Moma_PositiveF64:$capacity_factor);
  let results = (outs TensorRankOf<[I32], [2]>:$indices,
                      TensorRankOf<[F32], [2]>:$gates);
  let assemblyFormat = [{
    $scores (`valid` $valid^)? `capacity_factor` `=` $capacity_factor attr-dict
    `:` type($scores) (`,` type($valid)^)? `->` type($indices) `,` type($gates)
  }];
  let hasVerifier = 1;
}

def Moma_ModSelectOp : Moma_Op<"mod_select", [Pure, DeclareOpInterfaceMethods<Moma_DifferentiableOpInterface>]> {
  let summary = "Mixture-of-Depths token selection";
  let description = [{
    For router scores [N, 1], selects the k = ceil(capacity * N) tokens with
    the highest score (ties to the lower index) and returns them in
    ascending index order with their scores as gates.

    ```mlir
    %idx, %r = moma.mod_select %s capacity = 0.25
        : tensor<16x1xf32> -> tensor<?xi32>, tensor<?xf32>
    ```
  }];
  let arguments = (ins Moma_FloatMatrix:$scores,
                       ConfinedAttr<F64Attr, [
                         AttrConstraint<CPred<
                           "::llvm::cast<::mlir::FloatAttr>($_self).getValueAsDouble() > 0 && "
                           "::llvm::cast<::mlir::FloatAttr>($_self).getValueAsDouble() <= 1">,
                           "whose value is in (0, 1]">]>:$capacity);
  let results = (outs Moma_TokenVector:$indices, Moma_FloatVector:$gates);
  let assemblyFormat = [{
    $scores `capacity` `=` $capacity attr-dict
    `:` type($scores) `->` type($indices) `,` type($gates)
  }];
  let hasVerifier = 1;
}

def Moma_ModMergeOp : Moma_Op<"mod_merge",
    [Pure, AllTypesMatch<["input", "result"]>, DeclareOpInterfaceMethods<Moma_DifferentiableOpInterface>]> {
  let summary = "merge a Mixture-of-Depths block's output into the stream";
  let description = [{
    For each selected token j with row i = indices[j]:
    `result[i] = input[i] + gates[j] * (block[j] - input[i])`; every other
    row is `input[i]` (MODEL_SPEC section 5).

    ```mlir
    %out = moma.mod_merge %x, %y[%idx] gates %r
        : tensor<16x64xf32>, tensor<?x64xf32>, tensor<?xi32>, tensor<?xf32>
    ```
  }];
  let arguments = (ins Moma_FloatMatrix:$input, Moma_FloatMatrix:$block,
                       Moma_TokenVector:$indices, Moma_FloatVector:$gates);
  let results = (outs Moma_FloatMatrix:$result);
  let assemblyFormat = [{
    $input `,` $block `[` $indices `]` `gates` $gates attr-dict
    `:` type($input) `,` type($block) `,` type($indices) `,` type($gates)
  }];
  let hasVerifier = 1;
}

def Moma_AuxRouterOp : Moma_Op<"aux_router", [Pure, DeclareOpInterfaceMethods<Moma_DifferentiableOpInterface>]> {
  let summary = "auxiliary router for causal inference";
  let description = [{
    `sigmoid(silu(input w1^T) w2^T)`, shape [n, E]: predicts, from one
    token's hidden state alone, whether the batch router would choose it
    (MODEL_SPEC section 6). Its input carries no gradient: the predictor is
    trained with the main model frozen; w1 and w2 do (moma.aux_router_grad).

    ```mlir
    %p = moma.aux_router %x, %w1, %w2
        : tensor<?x64xf32>, tensor<32x64xf32>, tensor<4x32xf32> -> tensor<?x4xf32>
    ```
  }];
  let arguments = (ins Moma_FloatMatrix:$input, Moma_FloatMatrix:$w1,
                       Moma_FloatMatrix:$w2);
  let results = (outs Moma_FloatMatrix:$scores);
  let assemblyFormat = [{
    $input `,` $w1 `,` $w2 attr-dict
    `:` type($input) `,` type($w1) `,` type($w2) `->` type($scores)
  }];
  let hasVerifier = 1;
}

def Moma_AuxRouterLossOp : Moma_Op<"aux_router_loss", [Pure, DeclareOpInterfaceMethods<Moma_DifferentiableOpInterface>]> {
  let summary = "binary cross-entropy of an auxiliary router";
  let description = [{
    Mean over all [n, E] entries of the binary cross-entropy between
    `predictions` and the batch router's choice: 1 where token i is among
    `indices[e]` (or among `indices` for a single-output MoD router), else 0.

    With `valid` (a one-element count) only the first `valid[0]` rows are
    decisions: the rest are padding (`moma.padded_modality_partition`).

    ```mlir
    %l = moma.aux_router_loss %p, %idx : tensor<?x4xf32>, tensor<4x?xi32> -> tensor<f32>
    ```
  }];
  let arguments = (ins Moma_FloatMatrix:$predictions,
                       Moma_TokenIndices:$indices,
                       Optional<TensorRankOf<[I32], [1]>>:$valid);
  let results = (outs Moma_FloatScalar:$loss);
  let assemblyFormat = [{
    $predictions `,` $indices (`valid` $valid^)? attr-dict
    `:` type($predictions) `,` type($indices) (`,` type($valid)^)?
    `->` type($loss)
  }];
  let hasVerifier = 1;
}

def Moma_AuxRouterConfusionOp : Moma_Op<"aux_router_confusion", [Pure]> {
  let summary = "how an auxiliary router's 0.5 threshold meets the batch choice";
  let description = [{
    Over the [n, E] decisions of one router: [true positives (predicted
    > 0.5 and chosen by the batch router), predicted positives, chosen,
    decisions], as f32 counts, from which accuracy, precision and recall
    follow (MODEL_SPEC section 6).

    With `valid` (a one-element count) only the first `valid[0]` rows are
    decisions: the rest are padding (`moma.padded_modality_partition`).

    ```mlir
    %c = moma.aux_router_confusion %p, %idx : tensor<?x4xf32>, tensor<4x?xi32> -> tensor<4xf32>
    ```
  }];
  let arguments = (ins Moma_FloatMatrix:$predictions,
                       Moma_TokenIndices:$indices,
                       Optional<TensorRankOf<[I32], [1]>>:$valid);
  let results = (outs TensorOf<[F32]>:$counts);
  let assemblyFormat = [{
    $predictions `,` $indices (`valid` $valid^)? attr-dict
    `:` type($predictions) `,` type($indices) (`,` type($valid)^)?
    `->` type($counts)
  }];
  let hasVerifier = 1;
}

def Moma_CausalRouteOp : Moma_Op<"causal_route", [Pure]> {
  let summary = "causal routing by the auxiliary routers";
  let description = [{
    Routing for causal inference (MODEL_SPEC section 6): output e takes
    every token i whose auxiliary score `predictions[i, e]` is above 0.5,
    weighted by the main router's `scores[i, e]`. For scores and
    predictions [n, E], `indices[e]` lists output e's tokens in ascending
    order and `gates[e]` their scores; rows are as long as the longest
    (k = the largest count), a shorter row padded with token 0 at gate 0,
    which adds nothing where a gate multiplies. With one output (a MoD
    router) k is the count itself and nothing is padded. Not
    differentiated: causal routing is for inference.

    ```mlir
    %idx, %gate = moma.causal_route %s, %p
        : tensor<?x4xf32>, tensor<?x4xf32> -> tensor<4x?xi32>, tensor<4x?xf32>
    ```
  }];
  let arguments = (ins Moma_FloatMatrix:$scores, Moma_FloatMatrix:$predictions);
  let results = (outs TensorRankOf<[I32], [2]>:$indices,
                      TensorRankOf<[F32], [2]>:$gates);
  let assemblyFormat = [{
    $scores `,` $predictions attr-dict
    `:` type($scores) `,` type($predictions) `->` type($indices) `,` type($gates)
  }];
  let hasVerifier = 1;
}

def Moma_RoutingDisagreementOp : Moma_Op<"routing_disagreement", [Pure]> {
  let summary = "how often an auxiliary router disagrees with the batch router";
  let description = [{
    The fraction of the [n, E] decisions where the auxiliary router's
    `predictions[i, e] > 0.5` differs from the batch router's choice (token
    i among `indices[e]`, or among `indices` for a single-output MoD
    router): the causal-inference gap of one router.

    ```mlir
    %d = moma.routing_disagreement %p, %idx : tensor<?x4xf32>, tensor<4x?xi32> -> tensor<f32>
    ```
  }];
  let arguments = (ins Moma_FloatMatrix:$predictions,
                       Moma_TokenIndices:$indices);
  let results = (outs Moma_FloatScalar:$fraction);
  let assemblyFormat = [{
    $predictions `,` $indices attr-dict
    `:` type($predictions) `,` type($indices) `->` type($fraction)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Data movement
//===----------------------------------------------------------------------===//

def Moma_GatherTokensOp : Moma_Op<"gather_tokens", [Pure, DeclareOpInterfaceMethods<Moma_DifferentiableOpInterface>]> {
  let summary = "dispatch: gather token rows";
  let description = [{
    `result[j..., :] = source[indices[j...], :]`: the result's shape is the
    indices' shape followed by the source's trailing dimensions. Gathers
    hidden states for a group or an expert, and ids or positions (rank 1
    sources) for a token subset. With `padded`, an index at or past the
    source's row count is padding and reads zeros
    (`moma.padded_modality_partition`).

    ```mlir
    %xe = moma.gather_tokens %x[%idx] : tensor<?x64xf32>, tensor<4x?xi32> -> tensor<4x?x64xf32>
    ```
  }];
  let arguments = (ins AnyRankedTensor:$source, Moma_TokenIndices:$indices,
                       UnitAttr:$padded);
  let results = (outs AnyRankedTensor:$result);
  let assemblyFormat = [{
    $source `[` $indices `]` attr-dict
    `:` type($source) `,` type($indices) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Moma_ScatterAddTokensOp : Moma_Op<"scatter_add_tokens",
    [Pure, AllTypesMatch<["dest", "result"]>, DeclareOpInterfaceMethods<Moma_DifferentiableOpInterface>]> {
  let summary = "combine: scatter-add token rows, optionally weighted";
  let description = [{
    `result = dest`, then for every index tuple j:
    `result[indices[j], :] += weights[j] * source[j, :]` (weight 1 without
    `weights`). Combines expert outputs with their gates. With `padded`, an
    index at or past the destination's row count is padding and adds nothing.

    ```mlir
    %out = moma.scatter_add_tokens %ye into %acc[%idx] weights %gates
        : tensor<4x?x64xf32>, tensor<4x?xi32>, tensor<4x?xf32> into tensor<16x64xf32>
    ```
  }];
  let arguments = (ins Moma_Activations:$source, Moma_FloatMatrix:$dest,
                       Moma_TokenIndices:$indices,
                       Optional<RankedTensorOf<[F32]>>:$weights,
                       UnitAttr:$padded);
  let results = (outs Moma_FloatMatrix:$result);
  let assemblyFormat = [{
    $source `into` $dest `[` $indices `]` (`weights` $weights^)? attr-dict
    `:` type($source) `,` type($indices) (`,` type($weights)^)?
    `into` type($dest)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Transformer compute
//===----------------------------------------------------------------------===//

def Moma_EmbedOp : Moma_Op<"embed", [Pure, DeclareOpInterfaceMethods<Moma_DifferentiableOpInterface>]> {
  let summary = "token embedding lookup";
  let description = [{
    `result[n] = table[token_ids[n]]`.

    ```mlir
    %h = moma.embed %table[%ids] : tensor<512x64xf32>, tensor<16xi32> -> tensor<16x64xf32>
    ```
  }];
  let arguments = (ins Moma_FloatMatrix:$table, Moma_TokenVector:$token_ids);
  let results = (outs Moma_FloatMatrix:$result);
  let assemblyFormat = [{
    $table `[` $token_ids `]` attr-dict
    `:` type($table) `,` type($token_ids) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Moma_LinearOp : Moma_Op<"linear", [Pure, DeclareOpInterfaceMethods<Moma_DifferentiableOpInterface>]> {
  let summary = "x weight^T, plain or stacked per expert";
  let description = [{
    Rank 2: input [n, in], weight [out, in] -> [n, out]. Rank 3 (stacked
    experts): input [E, k, in], weight [E, out, in] -> [E, k, out], one GEMM
    per expert.

    ```mlir
    %q = moma.linear %x, %wq : tensor<16x64xf32>, tensor<64x64xf32> -> tensor<16x64xf32>
    ```
  }];
  let arguments = (ins Moma_Activations:$input, Moma_Activations:$weight);
  let results = (outs Moma_Activations:$result);
  let assemblyFormat = [{
    $input `,` $weight attr-dict
    `:` type($input) `,` type($weight) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Moma_RMSNormOp : Moma_Op<"rms_norm",
    [Pure, AllTypesMatch<["input", "result"]>, DeclareOpInterfaceMethods<Moma_DifferentiableOpInterface>]> {
  let summary = "RMSNorm over the last dimension";
  let description = [{
    `input / sqrt(mean(input^2) + epsilon) * weight`, per row.

    ```mlir
    %y = moma.rms_norm %x, %w epsilon = 1.0e-05 : tensor<16x64xf32>, tensor<64xf32>
    ```
  }];
  let arguments = (ins Moma_FloatMatrix:$input, Moma_FloatVector:$weight,
                       Moma_PositiveF64:$epsilon);
  let results = (outs Moma_FloatMatrix:$result);
  let assemblyFormat = [{
    $input `,` $weight `epsilon` `=` $epsilon attr-dict
    `:` type($input) `,` type($weight)
  }];
  let hasVerifier = 1;
}

def Moma_HeadLayerNormOp : Moma_Op<"head_layer_norm",
    [Pure, AllTypesMatch<["input", "result"]>,
     AllTypesMatch<["weight", "bias"]>, DeclareOpInterfaceMethods<Moma_DifferentiableOpInterface>]> {
  let summary = "LayerNorm over each head of q or k (qk-norm)";
  let description = [{
    The input [n, H * hd] is read as H heads of hd features; each head is
    normalized with its biased variance and scaled and shifted by its row of
    `weight` and `bias` ([H, hd]).

    ```mlir
    %qn = moma.head_layer_norm %q, %w, %b epsilon = 1.0e-05
        : tensor<16x64xf32>, tensor<4x16xf32>
    ```
  }];
  let arguments = (ins Moma_FloatMatrix:$input, Moma_FloatMatrix:$weight,
                       Moma_FloatMatrix:$bias, Moma_PositiveF64:$epsilon);
  let results = (outs Moma_FloatMatrix:$result);
  let assemblyFormat = [{
    $input `,` $weight `,` $bias `epsilon` `=` $epsilon attr-dict
    `:` type($input) `,` type($weight)
  }];
  let hasVerifier = 1;
}

def Moma_RopeOp : Moma_Op<"rope",
    [Pure, AllTypesMatch<["input", "result"]>, DeclareOpInterfaceMethods<Moma_DifferentiableOpInterface>]> {
  let summary = "rotary position embedding per head";
  let description = [{
    Each head of hd features is rotated by its token's position s:
    `x cos(phi) + rotate_half(x) sin(phi)`, phi_j = s * theta^(-2 (j mod hd/2) / hd).
    With `inverse` the rotation is by -phi: the transpose, which is the
    rotation's gradient.

    ```mlir
    %qr = moma.rope %q, %pos heads = 4 theta = 1.0e+04 : tensor<16x64xf32>, tensor<16xi32>
    ```
  }];
  let arguments = (ins Moma_FloatMatrix:$input, Moma_TokenVector:$positions,
                       Moma_PositiveI64:$num_heads, Moma_PositiveF64:$theta,
                       UnitAttr:$inverse);
  let results = (outs Moma_FloatMatrix:$result);
  let assemblyFormat = [{
    $input `,` $positions `heads` `=` $num_heads `theta` `=` $theta
    (`inverse` $inverse^)? attr-dict `:` type($input) `,` type($positions)
  }];
  let hasVerifier = 1;
}

def Moma_AttentionOp : Moma_Op<"attention",
    [Pure, AllTypesMatch<["query", "key", "value", "result"]>,
     AllTypesMatch<["positions", "sequence_ids"]>, DeclareOpInterfaceMethods<Moma_DifferentiableOpInterface>]> {
  let summary = "causal multi-head attention over packed token sets";
  let description = [{
    Query token i attends to key token j iff `sequence_ids[j] ==
    sequence_ids[i]` and `positions[j] <= positions[i]`, with softmax scale
    `scale`. Tokens may be any subset of the batch (Mixture-of-Depths), so
    the mask comes from the operands, not from the layout.

    ```mlir
    %o = moma.attention %q, %k, %v, %pos, %seq heads = 4 scale = 0.25
        : tensor<16x64xf32>, tensor<16xi32>
    ```
  }];
  let arguments = (ins Moma_FloatMatrix:$query, Moma_FloatMatrix:$key,
                       Moma_FloatMatrix:$value, Moma_TokenVector:$positions,
                       Moma_TokenVector:$sequence_ids,
                       Moma_PositiveI64:$num_heads, Moma_PositiveF64:$scale);
  let results = (outs Moma_FloatMatrix:$result);
  let assemblyFormat = [{
    $query `,` $key `,` $value `,` $positions `,` $sequence_ids
    `heads` `=` $num_heads `scale` `=` $scale attr-dict
    `:` type($query) `,` type($positions)
  }];
  let hasVerifier = 1;
}

def Moma_CachedAttentionOp : Moma_Op<"cached_attention",
    [Pure, AllTypesMatch<["query", "result"]>,
     AllTypesMatch<["key_cache", "value_cache"]>,
     AllTypesMatch<["positions", "sequence_ids"]>]> {
  let summary = "attention of new tokens over a key/value cache (decoding)";
  let description = [{
    The cache holds `context` rows per sequence: row s * context + j is
    sequence s's key (value) at position j, present where `valid` is
    nonzero. Query i, of sequence `sequence_ids[i]` at `positions[i]`,
    attends to its sequence's present rows at positions up to its own
    (which the caller has written first), with softmax scale `scale`: the
    same function as moma.attention over the whole sequence, one new token
    at a time.

    ```mlir
    %o = moma.cached_attention %q, %kc, %vc, %valid, %pos, %seq heads = 4
        scale = 0.25 context = 128
        : tensor<?x64xf32>, tensor<256x64xf32>, tensor<256xf32>, tensor<?xi32>
    ```
  }];
  let arguments = (ins Moma_FloatMatrix:$query, Moma_FloatMatrix:$key_cache,
                       Moma_FloatMatrix:$value_cache, Moma_FloatVector:$valid,
                       Moma_TokenVector:$positions,
                       Moma_TokenVector:$sequence_ids,
                       Moma_PositiveI64:$num_heads, Moma_PositiveF64:$scale,
                       Moma_PositiveI64:$context);
  let results = (outs Moma_FloatMatrix:$result);
  let assemblyFormat = [{
    $query `,` $key_cache `,` $value_cache `,` $valid `,` $positions `,`
    $sequence_ids `heads` `=` $num_heads `scale` `=` $scale
    `context` `=` $context attr-dict
    `:` type($query) `,` type($key_cache) `,` type($valid) `,` type($positions)
  }];
}

def Moma_SwiGLUOp : Moma_Op<"swiglu",
    [Pure, AllTypesMatch<["input", "result"]>, AllTypesMatch<["w1", "w3"]>,
     DeclareOpInterfaceMethods<Moma_DifferentiableOpInterface>]> {
  let summary = "SwiGLU feed-forward, dense or stacked experts";
  let description = [{
    `w2(silu(w1 x) * (w3 x))`. Rank 2: input [n, d], w1 and w3 [f, d], w2
    [d, f]. Rank 3 (stacked experts): input [E, k, d], w1 and w3 [E, f, d],
    w2 [E, d, f]; expert e applies its own weights to its k tokens.

    ```mlir
    %y = moma.swiglu %x, %w1, %w3, %w2
        : tensor<4x?x64xf32>, tensor<4x176x64xf32>, tensor<4x64x176xf32>
    ```
  }];
  let arguments = (ins Moma_Activations:$input, Moma_Activations:$w1,
                       Moma_Activations:$w3, Moma_Activations:$w2);
  let results = (outs Moma_Activations:$result);
  let assemblyFormat = [{
    $input `,` $w1 `,` $w3 `,` $w2 attr-dict
    `:` type($input) `,` type($w1) `,` type($w2)
  }];
  let hasVerifier = 1;
}

def Moma_CrossEntropyOp : Moma_Op<"cross_entropy", [Pure, DeclareOpInterfaceMethods<Moma_DifferentiableOpInterface>]> {
  let summary = "next-token loss with z-loss and per-modality means";
  let description = [{
    `loss = mean_n CE(logits[n], targets[n]) + z_loss * mean_n lse(logits[n])^2`.
    For each modality m (names and id ranges as in `moma.modality_partition`),
    `modality_losses[m]` is the plain mean cross-entropy over the targets whose
    id is m's (0 when there are none). Only `loss` is differentiated.

    ```mlir
    %loss, %text, %image = moma.cross_entropy %logits, %y z_loss = 1.0e-05
        modalities ["text", "image"] ranges [array<i64: 0, 256>, array<i64: 256, 512>]
        : tensor<16x512xf32>, tensor<16xi32> -> tensor<f32>, tensor<f32>, tensor<f32>
    ```
  }];
  let arguments = (ins Moma_FloatMatrix:$logits, Moma_TokenVector:$targets,
                       Moma_NonNegativeF64:$z_loss,
                       StrArrayAttr:$modality_names,
                       TypedArrayAttrBase<DenseI64ArrayAttr,
                           "array of token-range lists">:$modality_ranges);
  let results = (outs Moma_FloatScalar:$loss,
                      Variadic<Moma_FloatScalar>:$modality_losses);
  let assemblyFormat = [{
    $logits `,` $targets `z_loss` `=` $z_loss
    `modalities` $modality_names `ranges` $modality_ranges attr-dict
    `:` type($logits) `,` type($targets) `->` type($loss)
    (`,` type($modality_losses)^)?
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Gradients (built by -moma-synthesize-grad from the VJP rules)
//===----------------------------------------------------------------------===//

def Moma_MatmulOp : Moma_Op<"matmul", [Pure]> {
  let summary = "matrix product with optional transposes, plain or stacked";
  let description = [{
    `op(a) op(b)` where op transposes the last two dimensions when the
    matching flag is set; rank 3 operands are stacked per expert. The
    gradients of `moma.linear` are `dy w` and `dy^T x`.
  }];
  let arguments = (ins Moma_Activations:$lhs, Moma_Activations:$rhs,
                       UnitAttr:$transpose_lhs, UnitAttr:$transpose_rhs);
  let results = (outs Moma_Activations:$result);
  let assemblyFormat = [{
    $lhs (`transposed` $transpose_lhs^)? `,` $rhs
    (`transposed` $transpose_rhs^)? attr-dict
    `:` type($lhs) `,` type($rhs) `->` type($result)
  }];
  let hasVerifier = 1;
}

def Moma_RMSNormGradOp : Moma_Op<"rms_norm_grad",
    [Pure, AllTypesMatch<["input", "output_grad", "input_grad"]>,
     AllTypesMatch<["weight", "weight_grad"]>]> {
  let summary = "gradient of moma.rms_norm";
  let arguments = (ins Moma_FloatMatrix:$input, Moma_FloatVector:$weight,
                       Moma_FloatMatrix:$output_grad,
                       Moma_PositiveF64:$epsilon);
  let results = (outs Moma_FloatMatrix:$input_grad,
                      Moma_FloatVector:$weight_grad);
  let assemblyFormat = [{
    $input `,` $weight `,` $output_grad `epsilon` `=` $epsilon attr-dict
    `:` type($input) `,` type($weight)
  }];
}

def Moma_HeadLayerNormGradOp : Moma_Op<"head_layer_norm_grad",
    [Pure, AllTypesMatch<["input", "output_grad", "input_grad"]>,
     AllTypesMatch<["weight", "weight_grad", "bias_grad"]>]> {
  let summary = "gradient of moma.head_layer_norm";
  let arguments = (ins Moma_FloatMatrix:$input, Moma_FloatMatrix:$weight,
                       Moma_FloatMatrix:$output_grad,
                       Moma_PositiveF64:$epsilon);
  let results = (outs Moma_FloatMatrix:$input_grad,
                      Moma_FloatMatrix:$weight_grad,
                      Moma_FloatMatrix:$bias_grad);
  let assemblyFormat = [{
    $input `,` $weight `,` $output_grad `epsilon` `=` $epsilon attr-dict
    `:` type($input) `,` type($weight)
  }];
}

def Moma_AttentionGradOp : Moma_Op<"attention_grad",
    [Pure, AllTypesMatch<["query", "key", "value", "output_grad",
                          "query_grad", "key_grad", "value_grad"]>,
     AllTypesMatch<["positions", "sequence_ids"]>]> {
  let summary = "gradient of moma.attention (recomputes the probabilities)";
  let arguments = (ins Moma_FloatMatrix:$query, Moma_FloatMatrix:$key,
                       Moma_FloatMatrix:$value, Moma_TokenVector:$positions,
                       Moma_TokenVector:$sequence_ids,
                       Moma_FloatMatrix:$output_grad,
                       Moma_PositiveI64:$num_heads, Moma_PositiveF64:$scale);
  let results = (outs Moma_FloatMatrix:$query_grad, Moma_FloatMatrix:$key_grad,
                      Moma_FloatMatrix:$value_grad);
  let assemblyFormat = [{
    $query `,` $key `,` $value `,` $positions `,` $sequence_ids `,`
    $output_grad `heads` `=` $num_heads `scale` `=` $scale attr-dict
    `:` type($query) `,` type($positions)
  }];
}

def Moma_SwiGLUGradOp : Moma_Op<"swiglu_grad",
    [Pure, AllTypesMatch<["input", "output_grad", "input_grad"]>,
     AllTypesMatch<["w1", "w3", "w1_grad", "w3_grad"]>,
     AllTypesMatch<["w2", "w2_grad"]>]> {
  let summary = "gradient of moma.swiglu, dense or stacked";
  let arguments = (ins Moma_Activations:$input, Moma_Activations:$w1,
                       Moma_Activations:$w3, Moma_Activations:$w2,
                       Moma_Activations:$output_grad);
  let results = (outs Moma_Activations:$input_grad,
                      Moma_Activations:$w1_grad, Moma_Activations:$w3_grad,
                      Moma_Activations:$w2_grad);
  let assemblyFormat = [{
    $input `,` $w1 `,` $w3 `,` $w2 `,` $output_grad attr-dict
    `:` type($input) `,` type($w1) `,` type($w2)
  }];
}

def Moma_RouterGradOp : Moma_Op<"router_grad",
    [Pure, AllTypesMatch<["input", "input_grad"]>,
     AllTypesMatch<["weight", "weight_grad"]>,
     AllTypesMatch<["scores", "scores_grad"]>]> {
  let summary = "gradient of moma.router through the sigmoid";
  let arguments = (ins Moma_FloatMatrix:$input, Moma_FloatMatrix:$weight,
                       Moma_FloatMatrix:$scores, Moma_FloatMatrix:$scores_grad);
  let results = (outs Moma_FloatMatrix:$input_grad,
                      Moma_FloatMatrix:$weight_grad);
  let assemblyFormat = [{
    $input `,` $weight `,` $scores `,` $scores_grad attr-dict
    `:` type($input) `,` type($weight) `,` type($scores)
  }];
}

def Moma_GateGradOp : Moma_Op<"gate_grad",
    [Pure, AllTypesMatch<["scores", "scores_grad"]>]> {
  let summary = "gradient of routing gates with respect to the scores";
  let description = [{
    Gates are the scores of the chosen tokens: `gates[e, j] =
    scores[indices[e, j], e]` (expert choice) or `gates[j] =
    scores[indices[j], 0]` (MoD). The scores' gradient is the gates'
    gradient at the chosen entries and zero elsewhere.
  }];
  let arguments = (ins Moma_FloatMatrix:$scores, Moma_TokenIndices:$indices,
                       RankedTensorOf<[F32]>:$gates_grad);
  let results = (outs Moma_FloatMatrix:$scores_grad);
  let assemblyFormat = [{
    $scores `,` $indices `,` $gates_grad attr-dict
    `:` type($scores) `,` type($indices) `,` type($gates_grad)
  }];
}

def Moma_ScatterAddTokensGradOp : Moma_Op<"scatter_add_tokens_grad",
    [Pure, AllTypesMatch<["source", "source_grad"]>]> {
  let summary = "gradient of moma.scatter_add_tokens for source and weights";
  let description = [{
    `source_grad[j] = weights[j] * output_grad[indices[j]]` and
    `weights_grad[j] = output_grad[indices[j]] . source[j]` (the latter only
    with weights). With `padded`, an index at or past output_grad's row
    count is padding: both gradients are 0 there.
  }];
  let arguments = (ins Moma_Activations:$source, Moma_TokenIndices:$indices,
                       Optional<RankedTensorOf<[F32]>>:$weights,
                       Moma_FloatMatrix:$output_grad,
                       UnitAttr:$padded);
  let results = (outs Moma_Activations:$source_grad,
                      Optional<RankedTensorOf<[F32]>>:$weights_grad);
  let assemblyFormat = [{
    $source `,` $indices (`weights` $weights^)? `,` $output_grad attr-dict
    `:` type($source) `,` type($indices) (`,` type($weights)^)?
    `,` type($output_grad) (`->` type($weights_grad)^)?
  }];
}

def Moma_ModMergeGradOp : Moma_Op<"mod_merge_grad",
    [Pure, AllTypesMatch<["input", "output_grad", "input_grad"]>,
     AllTypesMatch<["block", "block_grad"]>,
     AllTypesMatch<["gates", "gates_grad"]>]> {
  let summary = "gradient of moma.mod_merge";
  let arguments = (ins Moma_FloatMatrix:$input, Moma_FloatMatrix:$block,
                       Moma_TokenVector:$indices, Moma_FloatVector:$gates,
                       Moma_FloatMatrix:$output_grad);
  let results = (outs Moma_FloatMatrix:$input_grad,
                      Moma_FloatMatrix:$block_grad,
                      Moma_FloatVector:$gates_grad);
  let assemblyFormat = [{
    $input `,` $block `[` $indices `]` `gates` $gates `,` $output_grad attr-dict
    `:` type($input) `,` type($block) `,` type($indices) `,` type($gates)
  }];
}

def Moma_CrossEntropyGradOp : Moma_Op<"cross_entropy_grad",
    [Pure, AllTypesMatch<["logits", "logits_grad"]>]> {
  let summary = "gradient of the loss of moma.cross_entropy";
  let description = [{
    `loss_grad * (softmax(l) - onehot(y) + 2 z lse(l) softmax(l)) / N`.
  }];
  let arguments = (ins Moma_FloatMatrix:$logits, Moma_TokenVector:$targets,
                       Moma_FloatScalar:$loss_grad,
                       Moma_NonNegativeF64:$z_loss);
  let results = (outs Moma_FloatMatrix:$logits_grad);
  let assemblyFormat = [{
    $logits `,` $targets `,` $loss_grad `z_loss` `=` $z_loss attr-dict
    `:` type($logits) `,` type($targets) `,` type($loss_grad)
  }];
}

//===----------------------------------------------------------------------===//
// Optimizer (built by -moma-synthesize-optimizer-step)
//===----------------------------------------------------------------------===//

def Moma_AuxRouterGradOp : Moma_Op<"aux_router_grad",
    [Pure, AllTypesMatch<["w1", "w1_grad"]>, AllTypesMatch<["w2", "w2_grad"]>,
     AllTypesMatch<["scores", "scores_grad"]>]> {
  let summary = "gradient of moma.aux_router for its weights";
  let description = [{
    For scores = sigmoid(silu(input w1^T) w2^T) and their gradient, the
    gradients of w1 and w2 (recomputing the hidden layer). The input has
    none: auxiliary routers train on a frozen model (MODEL_SPEC section 6).
  }];
  let arguments = (ins Moma_FloatMatrix:$input, Moma_FloatMatrix:$w1,
                       Moma_FloatMatrix:$w2, Moma_FloatMatrix:$scores,
                       Moma_FloatMatrix:$scores_grad);
  let results = (outs Moma_FloatMatrix:$w1_grad, Moma_FloatMatrix:$w2_grad);
  let assemblyFormat = [{
    $input `,` $w1 `,` $w2 `,` $scores `,` $scores_grad attr-dict
    `:` type($input) `,` type($w1) `,` type($w2) `,` type($scores)
  }];
}

def Moma_AuxRouterLossGradOp : Moma_Op<"aux_router_loss_grad",
    [Pure, AllTypesMatch<["predictions", "predictions_grad"]>]> {
  let summary = "gradient of moma.aux_router_loss for the predictions";
  let description = [{
    `loss_grad * (p - y) / max(p (1 - p), 1e-12) / (n E)`, with y the batch
    choice (1 where chosen): torch's BCELoss gradient. With `valid`, n is
    `valid[0]` and the padding rows past it get 0.
  }];
  let arguments = (ins Moma_FloatMatrix:$predictions,
                       Moma_TokenIndices:$indices,
                       Moma_FloatScalar:$loss_grad,
                       Optional<TensorRankOf<[I32], [1]>>:$valid);
  let results = (outs Moma_FloatMatrix:$predictions_grad);
  let assemblyFormat = [{
    $predictions `,` $indices `,` $loss_grad (`valid` $valid^)? attr-dict
    `:` type($predictions) `,` type($indices) `,` type($loss_grad)
    (`,` type($valid)^)?
  }];
}

def Moma_GlobalNormOp : Moma_Op<"global_norm", [Pure]> {
  let summary = "the L2 norm of several tensors taken together";
  let description = [{
    `sqrt(sum over all tensors and elements of x^2)`: the gradient norm that
    clipping (MODEL_SPEC section 7) compares with `grad_clip`.
  }];
  let arguments = (ins Variadic<Moma_Activations>:$tensors);
  let results = (outs Moma_FloatScalar:$norm);
  let assemblyFormat = [{
    $tensors attr-dict `:` type($tensors) `->` type($norm)
  }];
}

def Moma_AdamWUpdateOp : Moma_Op<"adamw_update",
    [Pure, AllTypesMatch<["param", "grad", "first_moment", "second_moment",
                          "new_param", "new_first_moment",
                          "new_second_moment"]>]> {
  let summary = "one AdamW step of one parameter (MODEL_SPEC section 7)";
  let description = [{
    With `schedule = [lr, 1 - beta1^t, 1 - beta2^t]` and the clipping factor
    `clip`: g' = clip g, m' = b1 m + (1 - b1) g', v' = b2 v + (1 - b2) g'^2,
    p' = p - lr (wd p + (m' / (1 - b1^t)) / (sqrt(v' / (1 - b2^t)) + eps)).
    A NaN `clip` (what @optimizer_step passes when the gradient norm is not
    finite) leaves p, m and v as they are. Every output element depends only on the same element of the inputs, so
    the update may be written over its inputs in place.
  }];
  let arguments = (ins Moma_Activations:$param, Moma_Activations:$grad,
                       Moma_Activations:$first_moment,
                       Moma_Activations:$second_moment,
                       TensorRankOf<[F32], [1]>:$schedule,
                       Moma_FloatScalar:$clip,
                       F64Attr:$beta1, F64Attr:$beta2, Moma_PositiveF64:$eps,
                       Moma_NonNegativeF64:$weight_decay);
  let results = (outs Moma_Activations:$new_param,
                      Moma_Activations:$new_first_moment,
                      Moma_Activations:$new_second_moment);
  let assemblyFormat = [{
    $param `,` $grad `,` $first_moment `,` $second_moment `schedule` $schedule
    `clip` $clip `beta1` `=` $beta1 `beta2` `=` $beta2 `eps` `=` $eps
    `weight_decay` `=` $weight_decay attr-dict
    `:` type($param) `,` type($schedule) `,` type($clip)
  }];
}

#endif // MOMA_OPS_TD
