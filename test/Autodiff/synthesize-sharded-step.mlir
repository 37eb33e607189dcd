// RUN: moma-opt %s -moma-synthesize-sharded-step="chunk=64 weight-decay=0.1" | FileCheck %s
// RUN: not moma-opt %s -moma-synthesize-sharded-step="chunk=10" 2>&1 | FileCheck %s --check-prefix=CHUNK

// @fsdp_grad is @grad with each parameter and gradient placed in its FSDP
// unit (lib/config/ShardUnits.h): one unit per layer, one per other
// parameter; offsets are multiples of 16 elements. The data arguments
// (tokens, batch_rows, the router noise) and the losses stay as they are.
// CHECK-LABEL: func.func @grad(
// CHECK-NOT: moma.shard_unit
// CHECK-LABEL: func.func @fsdp_grad(
// CHECK-SAME: {moma.param = "tokens"}
// CHECK-SAME: {moma.param = "tok_embeddings.weight", moma.shard_offset = 0 : i64, moma.shard_unit = 0 : i64}
// CHECK-SAME: {moma.param = "layers.0.attention.wq.weight", moma.shard_offset = 0 : i64, moma.shard_unit = 1 : i64}
// CHECK-SAME: {moma.param = "layers.0.attention_norm.weight", moma.shard_offset = 16 : i64, moma.shard_unit = 1 : i64}
// CHECK-SAME: {moma.param = "layers.0.feed_forward.w1.weight", moma.shard_offset = 32 : i64, moma.shard_unit = 1 : i64}
// CHECK-SAME: {moma.param = "layers.1.attention.wq.weight", moma.shard_offset = 0 : i64, moma.shard_unit = 2 : i64}
// CHECK-SAME: {moma.no_grad, moma.param = "gumbel_noise"}
// CHECK-SAME: {moma.result = "loss"}
// CHECK-SAME: {moma.result = "grad.tok_embeddings.weight", moma.shard_offset = 0 : i64, moma.shard_unit = 0 : i64}
// CHECK-SAME: {moma.result = "grad.layers.0.feed_forward.w1.weight", moma.shard_offset = 32 : i64, moma.shard_unit = 1 : i64}
// CHECK-SAME: attributes {moma.shard_unit_elements = array<i64: 32, 64, 16>, moma.shard_units = ["tok_embeddings.weight", "layers.0", "layers.1"], moma.sharded_parameters}
// The optimizer works on 64-element slices of a rank's shards: the norm of
// a gradient slice, and AdamW with and without weight decay.
// CHECK-LABEL: func.func @fsdp_grad_norm(
// CHECK-SAME: tensor<64xf32> {moma.param = "grad"}) -> (tensor<f32> {moma.result = "norm"})
// CHECK: moma.global_norm %{{.*}} : tensor<64xf32> -> tensor<f32>
// CHECK-LABEL: func.func @fsdp_adamw_decayed(
// CHECK-SAME: {moma.param = "param"}
// CHECK-SAME: tensor<3xf32> {moma.param = "schedule"}, %[[CLIP:.*]]: tensor<f32> {moma.param = "clip"})
// CHECK: moma.adamw_update {{.*}} clip %[[CLIP]] {{.*}} weight_decay = 1.000000e-01
// CHECK-LABEL: func.func @fsdp_adamw_undecayed(
// CHECK: moma.adamw_update {{.*}} weight_decay = 0.000000e+00

// CHUNK: error: the optimizer chunk (10 elements) must be a positive multiple of 16
func.func @grad(%tokens: tensor<2x5xi32> {moma.param = "tokens"},
                %emb: tensor<8x4xf32> {moma.param = "tok_embeddings.weight"},
                %wq: tensor<4x4xf32> {moma.param = "layers.0.attention.wq.weight"},
                %norm: tensor<4xf32> {moma.param = "layers.0.attention_norm.weight"},
                %w1: tensor<8x4xf32> {moma.param = "layers.0.feed_forward.w1.weight"},
                %wq1: tensor<4x4xf32> {moma.param = "layers.1.attention.wq.weight"},
                %noise: tensor<3xf32> {moma.param = "gumbel_noise", moma.no_grad})
    -> (tensor<f32> {moma.result = "loss"},
        tensor<8x4xf32> {moma.result = "grad.tok_embeddings.weight"},
        tensor<8x4xf32> {moma.result = "grad.layers.0.feed_forward.w1.weight"}) {
  %zero = arith.constant dense<0.0> : tensor<f32>
  return %zero, %emb, %w1 : tensor<f32>, tensor<8x4xf32>, tensor<8x4xf32>
}
