// RUN: moma-opt %s -split-input-file -moma-reuse-modality-partition | FileCheck %s

// Consecutive layers without MoD see the same tokens: one partition serves all.
// CHECK-LABEL: func.func @same_tokens_share_one_partition
// CHECK-SAME: (%[[IDS:.*]]: tensor<16xi32>, %[[X:.*]]: tensor<16x64xf32>)
// CHECK: %[[P:.*]]:2 = moma.modality_partition %[[IDS]]
// CHECK-NOT: moma.modality_partition
// CHECK: %[[A:.*]] = moma.gather_tokens %[[X]][%[[P]]#0]
// CHECK: %[[B:.*]] = moma.gather_tokens %[[X]][%[[P]]#1]
// CHECK: %[[C:.*]] = moma.gather_tokens %[[X]][%[[P]]#1]
// CHECK: return %[[A]], %[[B]], %[[C]]
func.func @same_tokens_share_one_partition(%ids: tensor<16xi32>, %x: tensor<16x64xf32>)
    -> (tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>) {
  %t0, %i0 = moma.modality_partition %ids groups ["text", "image"]
      ranges [array<i64: 0, 256>, array<i64: 256, 512>] : tensor<16xi32> -> tensor<?xi32>, tensor<?xi32>
  %a = moma.gather_tokens %x[%t0] : tensor<16x64xf32>, tensor<?xi32> -> tensor<?x64xf32>
  %t1, %i1 = moma.modality_partition %ids groups ["text", "image"]
      ranges [array<i64: 0, 256>, array<i64: 256, 512>] : tensor<16xi32> -> tensor<?xi32>, tensor<?xi32>
  %b = moma.gather_tokens %x[%i1] : tensor<16x64xf32>, tensor<?xi32> -> tensor<?x64xf32>
  %t2, %i2 = moma.modality_partition %ids groups ["text", "image"]
      ranges [array<i64: 0, 256>, array<i64: 256, 512>] : tensor<16xi32> -> tensor<?xi32>, tensor<?xi32>
  %c = moma.gather_tokens %x[%i2] : tensor<16x64xf32>, tensor<?xi32> -> tensor<?x64xf32>
  return %a, %b, %c : tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>
}

// -----

// MoD changes the token set: each MoD layer's router selects its own tokens,
// so its partition must stay.
// CHECK-LABEL: func.func @mod_layers_keep_their_partitions
// CHECK: moma.mod_select
// CHECK: %[[S0:.*]] = moma.gather_tokens %{{.*}} : tensor<16xi32>, tensor<4xi32> -> tensor<4xi32>
// CHECK: moma.modality_partition %[[S0]]
// CHECK: moma.mod_select
// CHECK: %[[S1:.*]] = moma.gather_tokens %{{.*}} : tensor<16xi32>, tensor<4xi32> -> tensor<4xi32>
// CHECK: moma.modality_partition %[[S1]]
func.func @mod_layers_keep_their_partitions(%ids: tensor<16xi32>, %x0: tensor<16x64xf32>,
    %x1: tensor<16x64xf32>, %w: tensor<1x64xf32>) -> (tensor<?xi32>, tensor<?xi32>) {
  %r0 = moma.router %x0, %w : tensor<16x64xf32>, tensor<1x64xf32> -> tensor<16x1xf32>
  %sel0, %g0 = moma.mod_select %r0 capacity = 0.25 : tensor<16x1xf32> -> tensor<4xi32>, tensor<4xf32>
  %ids0 = moma.gather_tokens %ids[%sel0] : tensor<16xi32>, tensor<4xi32> -> tensor<4xi32>
  %t0, %i0 = moma.modality_partition %ids0 groups ["text", "image"]
      ranges [array<i64: 0, 256>, array<i64: 256, 512>] : tensor<4xi32> -> tensor<?xi32>, tensor<?xi32>
  %r1 = moma.router %x1, %w : tensor<16x64xf32>, tensor<1x64xf32> -> tensor<16x1xf32>
  %sel1, %g1 = moma.mod_select %r1 capacity = 0.25 : tensor<16x1xf32> -> tensor<4xi32>, tensor<4xf32>
  %ids1 = moma.gather_tokens %ids[%sel1] : tensor<16xi32>, tensor<4xi32> -> tensor<4xi32>
  %t1, %i1 = moma.modality_partition %ids1 groups ["text", "image"]
      ranges [array<i64: 0, 256>, array<i64: 256, 512>] : tensor<4xi32> -> tensor<?xi32>, tensor<?xi32>
  return %t0, %t1 : tensor<?xi32>, tensor<?xi32>
}

// -----

// The same selection gathered twice is still the same tokens.
// CHECK-LABEL: func.func @equal_token_subsets_share
// CHECK: moma.modality_partition
// CHECK-NOT: moma.modality_partition
// CHECK: return
func.func @equal_token_subsets_share(%ids: tensor<16xi32>, %sel: tensor<4xi32>) -> (tensor<?xi32>, tensor<?xi32>) {
  %a = moma.gather_tokens %ids[%sel] : tensor<16xi32>, tensor<4xi32> -> tensor<4xi32>
  %p0:2 = moma.modality_partition %a groups ["text", "image"]
      ranges [array<i64: 0, 256>, array<i64: 256, 512>] : tensor<4xi32> -> tensor<?xi32>, tensor<?xi32>
  %b = moma.gather_tokens %ids[%sel] : tensor<16xi32>, tensor<4xi32> -> tensor<4xi32>
  %p1:2 = moma.modality_partition %b groups ["text", "image"]
      ranges [array<i64: 0, 256>, array<i64: 256, 512>] : tensor<4xi32> -> tensor<?xi32>, tensor<?xi32>
  return %p0#0, %p1#1 : tensor<?xi32>, tensor<?xi32>
}

// -----

// Different groupings of the same tokens are different partitions.
// CHECK-LABEL: func.func @different_groups_are_kept
// CHECK: moma.modality_partition %{{.*}} groups ["text", "image"]
// CHECK: moma.modality_partition %{{.*}} groups ["all"]
func.func @different_groups_are_kept(%ids: tensor<16xi32>) -> (tensor<?xi32>, tensor<?xi32>) {
  %t, %i = moma.modality_partition %ids groups ["text", "image"]
      ranges [array<i64: 0, 256>, array<i64: 256, 512>] : tensor<16xi32> -> tensor<?xi32>, tensor<?xi32>
  %all = moma.modality_partition %ids groups ["all"]
      ranges [array<i64: 0, 512>] : tensor<16xi32> -> tensor<?xi32>
  return %t, %all : tensor<?xi32>, tensor<?xi32>
}
