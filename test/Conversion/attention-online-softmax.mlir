// RUN: moma-opt %s -split-input-file -convert-moma-to-linalg="attention-block-rows=8" | FileCheck %s
// Attention lowers to online-softmax kernels over 8-row tiles of one head
// of one sequence (AttentionToLinalg.cpp); the numbers are checked end to
// end against the PyTorch reference (test/e2e), here the structure. No
// [len, len] score matrix exists: every score tile is [?, ?], at most 8 x 8.

// Forward: one parallel iteration per (sequence, head, query block): 16
// rows make ceil(16 / 8) query blocks (by seq_len in a model). Its query rows are a dynamic slice of one
// head's 16 columns; it sees key blocks 0 .. its own index (none when it
// has no rows).
// CHECK-LABEL: func.func @attention
// CHECK-NOT: tensor<4x16x16xf32>
// CHECK: scf.forall (%[[SEQ:.*]], %[[HEAD:.*]], %[[QB:.*]]) in (%{{.*}}, 4, %{{.*}}) shared_outs(%[[OUT:.*]] = %{{.*}}) -> (tensor<16x64xf32>)
// CHECK: %[[QREST:.*]] = affine.max
// CHECK: %[[QROWS:.*]] = affine.min #{{.*}}(%[[QREST]])
// CHECK: %[[COL:.*]] = arith.muli %[[HEAD]], %c16
// CHECK: %[[Q:.*]] = tensor.extract_slice %arg0[%[[QROW:.*]], %[[COL]]] [%[[QROWS]], 16] [1, 1] : tensor<16x64xf32> to tensor<?x16xf32>
// CHECK: %[[NEXT:.*]] = arith.addi %[[QB]], %c1
// CHECK: %[[KEYBLOCKS:.*]] = arith.select %{{.*}}, %[[NEXT]], %c0
// First sweep: the row statistics. A score tile q k^T, scaled and masked
// by position; the running maximum and the sum rescaled to it in place.
// CHECK: %[[STATS:.*]]:2 = scf.for %{{.*}} = %c0{{.*}} to %[[KEYBLOCKS]] step %c1{{.*}} iter_args(%[[M:.*]] = %{{.*}}, %[[L:.*]] = %{{.*}}) -> (tensor<?xf32>, tensor<?xf32>)
// CHECK: %[[K:.*]] = tensor.extract_slice %arg0[%{{.*}}, %[[COL]]] [%{{.*}}, 16] [1, 1]
// CHECK: %[[S:.*]] = linalg.contract indexing_maps = {{.*}} ins(%[[Q]], %[[K]] : tensor<?x16xf32>, tensor<?x16xf32>) outs(%{{.*}} : tensor<?x?xf32>)
// CHECK: ins(%[[S]], %{{.*}}, %{{.*}} : tensor<?x?xf32>, tensor<?xi32>, tensor<?xi32>)
// CHECK: arith.cmpi sle
// CHECK: arith.select %{{.*}}, %{{.*}}, %cst
// CHECK: arith.maximumf
// CHECK: outs(%[[M]], %[[L]] : tensor<?xf32>, tensor<?xf32>)
// CHECK: math.exp
// CHECK: math.exp
// CHECK: scf.yield
// CHECK: math.log
// Second sweep: p = exp(t - lse), out += p v straight into the output's
// rows of this block and head.
// CHECK: %[[DEST:.*]] = tensor.extract_slice %[[OUT]][%[[QROW]], %[[COL]]] [%[[QROWS]], 16] [1, 1]
// CHECK: %[[ZERO:.*]] = linalg.fill ins(%{{.*}} : f32) outs(%[[DEST]] : tensor<?x16xf32>)
// CHECK: %[[TILE:.*]] = scf.for %{{.*}} = %c0{{.*}} to %[[KEYBLOCKS]] step %c1{{.*}} iter_args(%[[ACC:.*]] = %[[ZERO]]) -> (tensor<?x16xf32>)
// CHECK: math.exp
// CHECK: linalg.contract indexing_maps = {{.*}} ins(%{{.*}}, %{{.*}} : tensor<?x?xf32>, tensor<?x16xf32>) outs(%[[ACC]] : tensor<?x16xf32>)
// CHECK: scf.forall.in_parallel
// CHECK-NEXT: tensor.parallel_insert_slice %[[TILE]] into %[[OUT]][%[[QROW]], %[[COL]]] [%[[QROWS]], 16] [1, 1]
func.func @attention(%x: tensor<16x64xf32>, %p: tensor<16xi32>) -> tensor<16x64xf32> {
  %o = moma.attention %x, %x, %x, %p, %p heads = 4 scale = 0.25 : tensor<16x64xf32>, tensor<16xi32>
  return %o : tensor<16x64xf32>
}

// -----

// Gradient, first: per (sequence, head, query block), the row statistics
// lse = m + log l and D = rowsum(p dp), one column per head of [n, 4].
// CHECK-LABEL: func.func @attention_grad
// CHECK: %[[ROWSTATS:.*]]:2 = scf.forall (%{{.*}}, %{{.*}}, %{{.*}}) in (%{{.*}}, 4, %{{.*}}) shared_outs(%[[LSE:.*]] = %{{.*}}, %[[D:.*]] = %{{.*}}) -> (tensor<?x4xf32>, tensor<?x4xf32>)
// CHECK: math.log
// CHECK: scf.for
// CHECK: math.exp
// CHECK: scf.forall.in_parallel
// CHECK-NEXT: tensor.parallel_insert_slice %{{.*}} into %[[LSE]][%{{.*}}, %{{.*}}] [%{{.*}}, 1] [1, 1] : tensor<?xf32> into tensor<?x4xf32>
// CHECK-NEXT: tensor.parallel_insert_slice %{{.*}} into %[[D]][%{{.*}}, %{{.*}}] [%{{.*}}, 1] [1, 1] : tensor<?xf32> into tensor<?x4xf32>
// Then per (sequence, head): its rows of dq, dk and dv zeroed in place; key
// blocks outside, the query blocks that see them (from the key block's own
// index) inside.
// CHECK: scf.forall (%{{.*}}, %[[HEAD:.*]]) in (%{{.*}}, 4) shared_outs(%[[DQ:.*]] = %{{.*}}, %[[DK:.*]] = %{{.*}}, %[[DV:.*]] = %{{.*}})
// CHECK-COUNT-3: linalg.fill
// CHECK: scf.for %[[KB:.*]] = %c0{{.*}} to %[[BLOCKS:.*]] step
// CHECK: scf.for %{{.*}} = %[[KB]] to %[[BLOCKS]] step
// CHECK: %[[TILELSE:.*]] = tensor.extract_slice %[[ROWSTATS]]#0[%{{.*}}, %[[HEAD]]] [%{{.*}}, 1] [1, 1] : tensor<?x4xf32> to tensor<?xf32>
// CHECK: %[[TILED:.*]] = tensor.extract_slice %[[ROWSTATS]]#1[%{{.*}}, %[[HEAD]]] [%{{.*}}, 1] [1, 1] : tensor<?x4xf32> to tensor<?xf32>
// p from the scores and lse; dv += p^T dout; dp = dout v^T;
// ds = p (dp - D) scale; dq += ds k; dk += ds^T q.
// CHECK: %[[P:.*]] = linalg.generic {{.*}} ins(%{{.*}}, %[[TILELSE]] : tensor<?x?xf32>, tensor<?xf32>)
// CHECK: math.exp
// CHECK: linalg.contract indexing_maps = {{.*}} ins(%[[P]], %{{.*}} : tensor<?x?xf32>, tensor<?x16xf32>)
// CHECK: %[[DP:.*]] = linalg.contract
// CHECK: %[[DS:.*]] = linalg.generic {{.*}} ins(%[[P]], %[[DP]], %[[TILED]] : tensor<?x?xf32>, tensor<?x?xf32>, tensor<?xf32>)
// CHECK: arith.subf
// CHECK: linalg.contract indexing_maps = {{.*}} ins(%[[DS]], %{{.*}} : tensor<?x?xf32>, tensor<?x16xf32>)
// CHECK: tensor.insert_slice
// CHECK: linalg.contract indexing_maps = {{.*}} ins(%[[DS]], %{{.*}} : tensor<?x?xf32>, tensor<?x16xf32>)
// CHECK: scf.forall.in_parallel
// CHECK-NEXT: tensor.parallel_insert_slice %{{.*}} into %[[DQ]]
// CHECK-NEXT: tensor.parallel_insert_slice %{{.*}} into %[[DK]]
// CHECK-NEXT: tensor.parallel_insert_slice %{{.*}} into %[[DV]]
func.func @attention_grad(%x: tensor<?x64xf32>, %p: tensor<?xi32>, %s: tensor<?xi32>, %d: tensor<?x64xf32>) -> (tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>) {
  %a, %b, %c = moma.attention_grad %x, %x, %x, %p, %s, %d heads = 4 scale = 0.25 : tensor<?x64xf32>, tensor<?xi32>
  return %a, %b, %c : tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>
}

// -----

// In a model, moma.token_positions numbers at most 32 / 16 = 2 sequences:
// attention runs over that bound, a constant, also for a subset of the
// tokens (a Mixture-of-Depths layer's, gathered), where the last sequences
// may have no tokens left. Without the bound the count is the last token's
// sequence id + 1, a load that a GPU step would read back to size its grid.
// CHECK-LABEL: func.func @attention_over_the_batch_sequences
// CHECK-NOT: tensor.extract %{{.*}} : tensor<?xi32>
// CHECK: scf.forall (%{{.*}}, %{{.*}}, %{{.*}}) in (2, 4, 2)
// CHECK: scf.forall (%{{.*}}, %{{.*}}) in (2, 4)
func.func @attention_over_the_batch_sequences(%x: tensor<?x64xf32>, %sel: tensor<?xi32>, %d: tensor<?x64xf32>)
    -> (tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>) {
  %pos, %seq = moma.token_positions seq_len = 16 : tensor<32xi32>
  %p = moma.gather_tokens %pos[%sel] : tensor<32xi32>, tensor<?xi32> -> tensor<?xi32>
  %s = moma.gather_tokens %seq[%sel] : tensor<32xi32>, tensor<?xi32> -> tensor<?xi32>
  %o = moma.attention %x, %x, %x, %p, %s heads = 4 scale = 0.25 : tensor<?x64xf32>, tensor<?xi32>
  %a, %b, %c = moma.attention_grad %x, %x, %x, %p, %s, %d heads = 4 scale = 0.25 : tensor<?x64xf32>, tensor<?xi32>
  return %o, %a, %b, %c : tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>, tensor<?x64xf32>
}
