// RUN: moma-opt %s -split-input-file -convert-moma-to-linalg | FileCheck %s
// The numerics of these kernels are checked end to end against the PyTorch
// reference (test/e2e); here, the structure each op lowers to.

// A linear map is the named contraction x w^T (linalg.contract): parallel
// rows and outputs, reduced features, which the targets' GEMM library
// rewrites read from the op.
// CHECK-DAG: #[[X:.*]] = affine_map<(d0, d1, d2) -> (d0, d2)>
// CHECK-DAG: #[[W:.*]] = affine_map<(d0, d1, d2) -> (d1, d2)>
// CHECK-DAG: #[[Y:.*]] = affine_map<(d0, d1, d2) -> (d0, d1)>
// CHECK-LABEL: func.func @linear
// CHECK: %[[ZERO:.*]] = linalg.fill
// CHECK: linalg.contract indexing_maps = [#[[X]], #[[W]], #[[Y]]]
// CHECK-SAME: ins(%{{.*}}, %{{.*}} : tensor<?x64xf32>, tensor<32x64xf32>) outs(%[[ZERO]] : tensor<?x32xf32>)
// CHECK-NOT: moma.
func.func @linear(%x: tensor<?x64xf32>, %w: tensor<32x64xf32>) -> tensor<?x32xf32> {
  %y = moma.linear %x, %w : tensor<?x64xf32>, tensor<32x64xf32> -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}

// -----

// Expert choice turns each score into a selection key (score bits in
// descending order above the token index, NaN last), has the runtime move
// each expert's k smallest keys to the front (O(n + k log k), no n x n
// comparisons), and reads slot j of expert e from key j. k = min(n, ceil(c n
// / E)) is computed in double.
// CHECK-LABEL: func.func @expert_choice
// CHECK: %[[N:.*]] = tensor.dim %{{.*}}, %c0
// CHECK: arith.mulf %{{.*}} : f64
// CHECK: arith.divf %{{.*}} : f64
// CHECK: math.ceil %{{.*}} : f64
// CHECK: %[[K:.*]] = arith.minui %[[N]]
// CHECK: %[[KEYS:.*]] = linalg.generic {{.*}} iterator_types = ["parallel", "parallel"]
// CHECK-SAME: ins(%{{.*}} : tensor<?x4xf32>) outs(%{{.*}} : tensor<4x?xi64>)
// CHECK: arith.bitcast %{{.*}} : f32 to i32
// CHECK: arith.cmpf uno
// CHECK: arith.shli
// CHECK: %[[BUF:.*]] = memref.alloc(%{{.*}}) : memref<4x?xi64>
// CHECK: bufferization.materialize_in_destination %[[KEYS]] in restrict writable %[[BUF]]
// CHECK: %[[K64:.*]] = arith.index_cast %[[K]] : index to i64
// CHECK: call @momart_select_smallest_i64(%{{.*}}, %{{.*}}, %{{.*}}, %[[K64]])
// CHECK: %[[TOP:.*]] = bufferization.to_tensor %[[BUF]] restrict writable
// CHECK: tensor.empty(%[[K]]) : tensor<4x?xi32>
// CHECK: tensor.empty(%[[K]]) : tensor<4x?xf32>
// CHECK: linalg.generic {{.*}} iterator_types = ["parallel", "parallel"]
// CHECK: tensor.extract %[[TOP]]
// CHECK: arith.andi %{{.*}}, %c2147483647_i64
// CHECK-NOT: scf.for
// CHECK: return
func.func @expert_choice(%s: tensor<?x4xf32>) -> (tensor<4x?xi32>, tensor<4x?xf32>) {
  %i, %g = moma.expert_choice %s capacity_factor = 1.0 : tensor<?x4xf32> -> tensor<4x?xi32>, tensor<4x?xf32>
  return %i, %g : tensor<4x?xi32>, tensor<4x?xf32>
}

// -----

// A partition counts every group's tokens in one loop (so a GPU step reads
// the counts back together), then lists each group's tokens in ascending
// order.
// CHECK-LABEL: func.func @partition
// CHECK: %[[COUNTS:.*]]:2 = scf.for {{.*}} iter_args(%{{.*}} = %[[ZERO:.*]], %{{.*}} = %[[ZERO]]) -> (index, index)
// CHECK: arith.cmpi sge
// CHECK: arith.cmpi slt
// CHECK: arith.cmpi sge
// CHECK: arith.cmpi slt
// CHECK: scf.yield
// CHECK: tensor.empty(%[[COUNTS]]#0) : tensor<?xi32>
// CHECK: scf.for
// CHECK: scf.if
// CHECK: tensor.empty(%[[COUNTS]]#1) : tensor<?xi32>
// CHECK: scf.for
// CHECK: scf.if
// CHECK-NOT: moma.
func.func @partition(%ids: tensor<16xi32>) -> (tensor<?xi32>, tensor<?xi32>) {
  %t, %i = moma.modality_partition %ids groups ["text", "image"]
      ranges [array<i64: 0, 256>, array<i64: 256, 512>] : tensor<16xi32> -> tensor<?xi32>, tensor<?xi32>
  return %t, %i : tensor<?xi32>, tensor<?xi32>
}

// -----

// A padded partition (a MoD layer's groups on the CUDA target) fills each
// list with n, the padding, then writes the group's tokens from the front;
// each count goes into a tensor right after its loop (on a GPU, in the
// loop's own launch). No list's size depends on them.
// CHECK-LABEL: func.func @padded_partition
// CHECK: %[[N:.*]] = tensor.dim %{{.*}}, %c0
// CHECK: %[[PAD:.*]] = arith.index_cast %[[N]] : index to i32
// CHECK: %[[TEXT0:.*]] = linalg.fill ins(%[[PAD]] : i32) outs(%{{.*}} : tensor<?xi32>)
// CHECK: %[[TEXT:.*]]:2 = scf.for {{.*}} iter_args(%{{.*}} = %[[TEXT0]], %{{.*}} = %c0{{.*}}) -> (tensor<?xi32>, index)
// CHECK: scf.if
// CHECK: %[[C0:.*]] = arith.index_cast %[[TEXT]]#1 : index to i32
// CHECK: %[[COUNTS0:.*]] = tensor.insert %[[C0]] into %{{.*}}[%c0{{.*}}] : tensor<2xi32>
// CHECK: %[[IMAGE0:.*]] = linalg.fill ins(%{{.*}} : i32) outs(%{{.*}} : tensor<?xi32>)
// CHECK: %[[IMAGE:.*]]:2 = scf.for {{.*}} iter_args(%{{.*}} = %[[IMAGE0]], %{{.*}} = %c0{{.*}}) -> (tensor<?xi32>, index)
// CHECK: %[[C1:.*]] = arith.index_cast %[[IMAGE]]#1 : index to i32
// CHECK: %[[COUNTS:.*]] = tensor.insert %[[C1]] into %[[COUNTS0]][%c1{{.*}}] : tensor<2xi32>
// CHECK: return %[[TEXT]]#0, %[[IMAGE]]#0, %[[COUNTS]]
func.func @padded_partition(%ids: tensor<?xi32>) -> (tensor<?xi32>, tensor<?xi32>, tensor<2xi32>) {
  %t, %i, %c = moma.padded_modality_partition %ids groups ["text", "image"]
      ranges [array<i64: 0, 256>, array<i64: 256, 512>] : tensor<?xi32> -> (tensor<?xi32>, tensor<?xi32>), tensor<2xi32>
  return %t, %i, %c : tensor<?xi32>, tensor<?xi32>, tensor<2xi32>
}

// -----

// Expert choice over the valid rows: padding rows get the largest score
// bits (they sort after every token), the width is k for all n rows, and
// the kernel takes the count's own k: a slot past it holds row n - 1 at
// gate 0. The count is read inside the kernels only, never on the host.
// CHECK-LABEL: func.func @expert_choice_over_valid_rows
// CHECK: %[[N:.*]] = tensor.dim %{{.*}}, %c0
// CHECK: %[[K:.*]] = arith.minui %[[N]]
// CHECK: linalg.generic {{.*}} ins(%{{.*}} : tensor<?x4xf32>) outs(%{{.*}} : tensor<4x?xi64>)
// CHECK: %[[ROW:.*]] = linalg.index 1 : index
// CHECK: %[[COUNT:.*]] = tensor.extract %{{.*}}[%{{.*}}] : tensor<1xi32>
// CHECK: %[[VALID:.*]] = arith.index_cast %[[COUNT]] : i32 to index
// CHECK: %[[TOKEN:.*]] = arith.cmpi ult, %[[ROW]], %[[VALID]] : index
// CHECK: arith.select %[[TOKEN]], %{{.*}}, %c-1_i32{{.*}} : i32
// CHECK: call @momart_select_smallest_i64
// CHECK: tensor.empty(%[[K]]) : tensor<4x?xi32>
// CHECK: linalg.generic
// CHECK: %[[SLOT:.*]] = linalg.index 1 : index
// CHECK: tensor.extract %{{.*}}[%{{.*}}] : tensor<1xi32>
// CHECK: math.ceil %{{.*}} : f64
// CHECK: %[[COUNTK:.*]] = arith.minui
// CHECK: %[[TAKEN:.*]] = arith.cmpi ult, %[[SLOT]], %[[COUNTK]] : index
// CHECK: %[[LAST:.*]] = arith.subi %{{.*}}, %c1{{.*}} : index
// CHECK: arith.select %[[TAKEN]], %{{.*}}, %[[LAST]] : index
// CHECK: arith.select %[[TAKEN]], %{{.*}}, %cst{{.*}} : f32
// CHECK-NOT: tensor.extract %{{.*}} : tensor<1xi32>
// CHECK: return
func.func @expert_choice_over_valid_rows(%s: tensor<?x4xf32>, %n: tensor<1xi32>) -> (tensor<4x?xi32>, tensor<4x?xf32>) {
  %i, %g = moma.expert_choice %s valid %n capacity_factor = 1.0 : tensor<?x4xf32>, tensor<1xi32> -> tensor<4x?xi32>, tensor<4x?xf32>
  return %i, %g : tensor<4x?xi32>, tensor<4x?xf32>
}

// -----

// Padded gathers read zeros past the source's rows (the index clamped so the
// read stays in bounds); padded scatters add 0 to row 0 there.
// CHECK-LABEL: func.func @padded_gather_and_scatter
// CHECK: linalg.generic
// CHECK: %[[ROWS:.*]] = tensor.dim %{{.*}}, %c0{{.*}} : tensor<?x64xf32>
// CHECK: %[[IN:.*]] = arith.cmpi ult, %{{.*}}, %[[ROWS]] : index
// CHECK: %[[AT:.*]] = arith.select %[[IN]], %{{.*}}, %c0{{.*}} : index
// CHECK: %[[V:.*]] = tensor.extract %{{.*}}[%[[AT]], %{{.*}}] : tensor<?x64xf32>
// CHECK: arith.select %[[IN]], %[[V]], %cst{{.*}} : f32
// CHECK: scf.for
// CHECK: scf.for
// CHECK: %[[INSIDE:.*]] = arith.cmpi ult, %{{.*}}, %{{.*}} : index
// CHECK: arith.select %[[INSIDE]], %{{.*}}, %c0{{.*}} : index
// CHECK: arith.select %[[INSIDE]], %{{.*}}, %cst{{.*}} : f32
// CHECK: tensor.insert
func.func @padded_gather_and_scatter(%x: tensor<?x64xf32>, %rows: tensor<?xi32>,
                                     %acc: tensor<?x64xf32>) -> tensor<?x64xf32> {
  %g = moma.gather_tokens %x[%rows] {padded} : tensor<?x64xf32>, tensor<?xi32> -> tensor<?x64xf32>
  %out = moma.scatter_add_tokens %g into %acc[%rows] {padded} : tensor<?x64xf32>, tensor<?xi32> into tensor<?x64xf32>
  return %out : tensor<?x64xf32>
}

// -----

// Attention: test/Conversion/attention-online-softmax.mlir.

// -----

// Cross-entropy yields the loss and one plain mean per modality.
// CHECK-LABEL: func.func @cross_entropy
// CHECK-COUNT-3: tensor.from_elements
// CHECK-NOT: moma.
func.func @cross_entropy(%l: tensor<16x512xf32>, %t: tensor<16xi32>) -> (tensor<f32>, tensor<f32>, tensor<f32>) {
  %loss, %a, %b = moma.cross_entropy %l, %t z_loss = 1.0e-5 modalities ["text", "image"]
      ranges [array<i64: 0, 256>, array<i64: 256, 512>] : tensor<16x512xf32>, tensor<16xi32> -> tensor<f32>, tensor<f32>, tensor<f32>
  return %loss, %a, %b : tensor<f32>, tensor<f32>, tensor<f32>
}

// -----

// Every op of a whole model lowers (the MoD + 4t4i tiny example's ops).
// CHECK-LABEL: func.func @mixture_of_depths
// CHECK-NOT: moma.
func.func @mixture_of_depths(%x: tensor<16x64xf32>, %w: tensor<1x64xf32>, %ids: tensor<16xi32>,
                             %w1: tensor<32x64xf32>, %w2: tensor<1x32xf32>) -> (tensor<16x64xf32>, tensor<f32>) {
  %r = moma.router %x, %w : tensor<16x64xf32>, tensor<1x64xf32> -> tensor<16x1xf32>
  %sel, %g = moma.mod_select %r capacity = 0.25 : tensor<16x1xf32> -> tensor<4xi32>, tensor<4xf32>
  %xs = moma.gather_tokens %x[%sel] : tensor<16x64xf32>, tensor<4xi32> -> tensor<4x64xf32>
  %out = moma.mod_merge %x, %xs[%sel] gates %g : tensor<16x64xf32>, tensor<4x64xf32>, tensor<4xi32>, tensor<4xf32>
  %p = moma.aux_router %x, %w1, %w2 : tensor<16x64xf32>, tensor<32x64xf32>, tensor<1x32xf32> -> tensor<16x1xf32>
  %l = moma.aux_router_loss %p, %sel : tensor<16x1xf32>, tensor<4xi32> -> tensor<f32>
  return %out, %l : tensor<16x64xf32>, tensor<f32>
}

// -----

// Router noise is added to the logits before the sigmoid.
// CHECK-LABEL: func.func @router_with_noise
// CHECK: %[[LOGITS:.*]] = linalg.contract
// CHECK: %[[NOISY:.*]] = linalg.generic {{.*}} ins(%[[LOGITS]], %{{.*}} : tensor<?x4xf32>, tensor<?x4xf32>)
// CHECK: arith.addf
// CHECK: linalg.generic {{.*}} ins(%[[NOISY]] : tensor<?x4xf32>)
// CHECK: math.exp
func.func @router_with_noise(%x: tensor<?x64xf32>, %w: tensor<4x64xf32>, %n: tensor<?x4xf32>) -> tensor<?x4xf32> {
  %s = moma.router %x, %w noise %n : tensor<?x64xf32>, tensor<4x64xf32>, tensor<?x4xf32> -> tensor<?x4xf32>
  return %s : tensor<?x4xf32>
}

// -----

// MoD selects the top k_d = ceil(c_d N) by score, then selects those k_d
// tokens again by index, so they come out in ascending token order.
// CHECK-LABEL: func.func @mod_select
// CHECK: math.ceil
// CHECK: linalg.generic
// CHECK: call @momart_select_smallest_i64
// CHECK: %[[TOP:.*]] = bufferization.to_tensor %{{.*}} : memref<1x16xi64> to tensor<1x16xi64>
// CHECK: %[[TOKENS:.*]] = linalg.generic
// CHECK: tensor.extract %[[TOP]]
// CHECK: call @momart_select_smallest_i64
// CHECK: %[[ASC:.*]] = bufferization.to_tensor %{{.*}} : memref<1x?xi64> to tensor<1x?xi64>
// CHECK: linalg.generic {{.*}} outs(%{{.*}}, %{{.*}} : tensor<4xi32>, tensor<4xf32>)
// CHECK: tensor.extract %[[ASC]]
func.func @mod_select(%r: tensor<16x1xf32>) -> (tensor<4xi32>, tensor<4xf32>) {
  %sel, %g = moma.mod_select %r capacity = 0.25 : tensor<16x1xf32> -> tensor<4xi32>, tensor<4xf32>
  return %sel, %g : tensor<4xi32>, tensor<4xf32>
}

// -----

// Causal routing: k is the most tokens any output's auxiliary score passes
// (> 0.5); rows start as token 0 at gate 0, then each output's tokens are
// written in ascending order with the main router's score as gate.
// CHECK-LABEL: func.func @causal_route
// CHECK: %[[N:.*]] = tensor.dim %[[P:.*]], %c0 : tensor<?x4xf32>
// CHECK: %[[K:.*]] = scf.for
// CHECK: arith.cmpf ogt, %{{.*}}, %{{.*}} : f32
// CHECK: arith.maxui
// CHECK: %[[ROWS:.*]] = tensor.empty(%[[K]]) : tensor<4x?xi32>
// CHECK: linalg.fill ins(%c0_i32 : i32)
// CHECK: scf.for
// CHECK: scf.for %[[I:.*]] = %{{.*}} to %[[N]]
// CHECK: scf.if
// CHECK: tensor.insert %{{.*}} into %{{.*}} : tensor<4x?xi32>
// CHECK: tensor.insert %{{.*}} into %{{.*}} : tensor<4x?xf32>
func.func @causal_route(%s: tensor<?x4xf32>, %p: tensor<?x4xf32>) -> (tensor<4x?xi32>, tensor<4x?xf32>) {
  %i, %g = moma.causal_route %s, %p : tensor<?x4xf32>, tensor<?x4xf32> -> tensor<4x?xi32>, tensor<4x?xf32>
  return %i, %g : tensor<4x?xi32>, tensor<4x?xf32>
}

// -----

// Disagreement: the batch choice as a 0/1 mask, compared with aux > 0.5,
// counted and divided by the decisions (0 for an empty group).
// CHECK-LABEL: func.func @routing_disagreement
// CHECK: tensor.insert
// CHECK: linalg.generic
// CHECK: arith.cmpf ogt
// CHECK: arith.xori
// CHECK: arith.uitofp
// CHECK: arith.divf
// CHECK: arith.select
func.func @routing_disagreement(%p: tensor<?x1xf32>, %sel: tensor<?xi32>) -> tensor<f32> {
  %d = moma.routing_disagreement %p, %sel : tensor<?x1xf32>, tensor<?xi32> -> tensor<f32>
  return %d : tensor<f32>
}

// -----

// Confusion counts of an auxiliary router: one pass summing [predicted and
// chosen], [predicted], [chosen], then the decision count.
// CHECK-LABEL: func.func @aux_router_confusion
// CHECK: linalg.generic
// CHECK: arith.cmpf ogt
// CHECK: tensor.from_elements %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : tensor<4xf32>
func.func @aux_router_confusion(%p: tensor<?x4xf32>, %sel: tensor<4x?xi32>) -> tensor<4xf32> {
  %c = moma.aux_router_confusion %p, %sel : tensor<?x4xf32>, tensor<4x?xi32> -> tensor<4xf32>
  return %c : tensor<4xf32>
}

// -----

// The aux router's weight gradients recompute the hidden layer in f32:
// four f32 contractions (x w1^T, dz^T h, dz w2, da^T x).
// CHECK-LABEL: func.func @aux_router_grad
// CHECK-COUNT-4: linalg.contract
// CHECK-NOT: bf16
func.func @aux_router_grad(%x: tensor<?x64xf32>, %w1: tensor<32x64xf32>, %w2: tensor<4x32xf32>,
                           %p: tensor<?x4xf32>, %dp: tensor<?x4xf32>) -> (tensor<32x64xf32>, tensor<4x32xf32>) {
  %dw1, %dw2 = moma.aux_router_grad %x, %w1, %w2, %p, %dp
      : tensor<?x64xf32>, tensor<32x64xf32>, tensor<4x32xf32>, tensor<?x4xf32>
  return %dw1, %dw2 : tensor<32x64xf32>, tensor<4x32xf32>
}

// -----

// BCE gradient: (p - y) / max(p (1 - p), 1e-12) times loss_grad / (n E).
// CHECK-LABEL: func.func @aux_router_loss_grad
// CHECK: arith.maximumf
// CHECK: arith.divf
func.func @aux_router_loss_grad(%p: tensor<?x1xf32>, %sel: tensor<?xi32>, %g: tensor<f32>) -> tensor<?x1xf32> {
  %d = moma.aux_router_loss_grad %p, %sel, %g : tensor<?x1xf32>, tensor<?xi32>, tensor<f32>
  return %d : tensor<?x1xf32>
}

// -----

// Cached attention: one query per parallel iteration; the keys are its
// sequence's cache rows up to its own position p, min(p + 1, 16) of them,
// at positions 0..p, present where valid != 0 (absent rows get sequence
// -1, which no query has).
// CHECK: #[[MIN:.*]] = affine_map<(d0) -> (d0 + 1, 16)>
// CHECK-LABEL: func.func @cached_attention
// CHECK: scf.forall (%[[I:.*]]) in (%{{.*}}) shared_outs
// CHECK: %[[SEQ:.*]] = tensor.extract %{{.*}}[%[[I]]] : tensor<2xi32>
// CHECK: %[[POS:.*]] = tensor.extract %{{.*}}[%[[I]]] : tensor<2xi32>
// CHECK: %[[FIRST:.*]] = arith.muli %{{.*}}, %c16
// CHECK: %[[P:.*]] = arith.index_cast %[[POS]]
// CHECK: %[[ROWS:.*]] = affine.min #[[MIN]](%[[P]])
// CHECK: tensor.extract_slice %{{.*}}[%[[FIRST]], 0] [%[[ROWS]], 64] [1, 1] : tensor<32x64xf32> to tensor<?x64xf32>
// CHECK: linalg.index 0
// CHECK: arith.cmpf one
// CHECK: arith.select %{{.*}}, %[[SEQ]], %c-1_i32
// CHECK: math.exp
// CHECK: tensor.parallel_insert_slice %{{.*}} into %{{.*}}[%[[I]], 0] [1, 64] [1, 1]
func.func @cached_attention(%q: tensor<2x64xf32>, %kc: tensor<32x64xf32>, %vc: tensor<32x64xf32>,
                            %valid: tensor<32xf32>, %pos: tensor<2xi32>, %seq: tensor<2xi32>) -> tensor<2x64xf32> {
  %o = moma.cached_attention %q, %kc, %vc, %valid, %pos, %seq heads = 4 scale = 0.25 context = 16
      : tensor<2x64xf32>, tensor<32x64xf32>, tensor<32xf32>, tensor<2xi32>
  return %o : tensor<2x64xf32>
}

// -----

// Splat zeros (what the embedding table's gradient accumulates into) become a
// fill of an empty tensor, whatever their size: as a constant, a table-sized
// splat would be a global in the artifact's read-only data, copied at every
// step. Small splat constants stay constants.
// CHECK-LABEL: func.func @splat_zeros
// CHECK-NOT: tensor.splat
// CHECK-NOT: dense<0.000000e+00> : tensor<4096x128xf32>
// CHECK-DAG: %[[E:.*]] = tensor.empty() : tensor<4096x128xf32>
// CHECK-DAG: linalg.fill ins(%{{.*}} : f32) outs(%[[E]] : tensor<4096x128xf32>)
// CHECK-DAG: %[[ED:.*]] = tensor.empty(%{{.*}}) : tensor<?x128xf32>
// CHECK-DAG: linalg.fill ins(%{{.*}} : f32) outs(%[[ED]] : tensor<?x128xf32>)
// CHECK-DAG: %[[EC:.*]] = tensor.empty() : tensor<2048x2xf32>
// CHECK-DAG: linalg.fill ins(%{{.*}} : f32) outs(%[[EC]] : tensor<2048x2xf32>)
// CHECK-DAG: arith.constant dense<1.000000e+00> : tensor<4x2xf32>
func.func @splat_zeros(%n: index) -> (tensor<4096x128xf32>, tensor<?x128xf32>, tensor<2048x2xf32>, tensor<4x2xf32>) {
  %zero = arith.constant 0.0 : f32
  %table = tensor.splat %zero : tensor<4096x128xf32>
  %rows = tensor.splat %zero[%n] : tensor<?x128xf32>
  %large = arith.constant dense<1.0> : tensor<2048x2xf32>
  %small = arith.constant dense<1.0> : tensor<4x2xf32>
  return %table, %rows, %large, %small : tensor<4096x128xf32>, tensor<?x128xf32>, tensor<2048x2xf32>, tensor<4x2xf32>
}

// -----

// AdamW is one element-wise kernel over the parameter, its gradient and its
// moments (so it may write over them in place); a NaN clip factor (a
// non-finite gradient norm) selects the old values for all three outputs.
// CHECK-LABEL: func.func @adamw
// CHECK-DAG: %[[LR:.*]] = tensor.extract %{{.*}}[%c0
// CHECK-DAG: %[[CLIP:.*]] = tensor.extract %{{.*}}[] : tensor<f32>
// CHECK: linalg.generic
// CHECK-SAME: ins(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : tensor<8x4xf32>, tensor<8x4xf32>, tensor<8x4xf32>, tensor<8x4xf32>)
// CHECK: ^bb0(%[[P:[a-z0-9_]+]]: f32, %{{[a-z0-9_]+}}: f32, %[[M:[a-z0-9_]+]]: f32, %[[V:[a-z0-9_]+]]: f32
// CHECK: math.sqrt
// CHECK: %[[SKIP:.*]] = arith.cmpf uno, %[[CLIP]], %[[CLIP]] : f32
// CHECK-DAG: %[[P2:.*]] = arith.select %[[SKIP]], %[[P]], %{{.*}} : f32
// CHECK-DAG: %[[M2:.*]] = arith.select %[[SKIP]], %[[M]], %{{.*}} : f32
// CHECK-DAG: %[[V2:.*]] = arith.select %[[SKIP]], %[[V]], %{{.*}} : f32
// CHECK: linalg.yield %[[P2]], %[[M2]], %[[V2]]
// CHECK-NOT: linalg.generic
func.func @adamw(%p: tensor<8x4xf32>, %g: tensor<8x4xf32>, %m: tensor<8x4xf32>,
                 %v: tensor<8x4xf32>, %schedule: tensor<3xf32>, %clip: tensor<f32>)
    -> (tensor<8x4xf32>, tensor<8x4xf32>, tensor<8x4xf32>) {
  %p2, %m2, %v2 = moma.adamw_update %p, %g, %m, %v schedule %schedule clip %clip
      beta1 = 0.9 beta2 = 0.95 eps = 1.0e-5 weight_decay = 0.1
      : tensor<8x4xf32>, tensor<3xf32>, tensor<f32>
  return %p2, %m2, %v2 : tensor<8x4xf32>, tensor<8x4xf32>, tensor<8x4xf32>
}
