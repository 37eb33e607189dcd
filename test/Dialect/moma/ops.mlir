// Round trip of every moma op, in the custom and in the generic form.
// RUN: moma-opt %s | moma-opt | FileCheck %s
// RUN: moma-opt %s --mlir-print-op-generic | moma-opt | FileCheck %s

// CHECK-LABEL: func.func @token_layout
func.func @token_layout(%tokens: tensor<2x9xi32>) -> (tensor<16xi32>, tensor<16xi32>, tensor<16xi32>, tensor<16xi32>) {
  // CHECK: %[[X:.*]], %[[Y:.*]] = moma.shift_tokens %{{.*}} : tensor<2x9xi32> -> tensor<16xi32>
  %x, %y = moma.shift_tokens %tokens : tensor<2x9xi32> -> tensor<16xi32>
  // CHECK: %[[P:.*]], %[[S:.*]] = moma.token_positions seq_len = 8 : tensor<16xi32>
  %pos, %seq = moma.token_positions seq_len = 8 : tensor<16xi32>
  // CHECK: return %[[X]], %[[Y]], %[[P]], %[[S]]
  return %x, %y, %pos, %seq : tensor<16xi32>, tensor<16xi32>, tensor<16xi32>, tensor<16xi32>
}

// CHECK-LABEL: func.func @routing
func.func @routing(%ids: tensor<16xi32>, %x: tensor<16x64xf32>, %w: tensor<4x64xf32>,
                   %wmod: tensor<1x64xf32>, %noise: tensor<?x4xf32>) -> (tensor<4x?xi32>, tensor<4x?xf32>, tensor<4xi32>, tensor<4xf32>, tensor<?xi32>) {
  // CHECK: %[[PART:.*]]:2 = moma.modality_partition %{{.*}} groups ["text", "image"] ranges [array<i64: 0, 4, 8196, 65536>, array<i64: 4, 8196>] : tensor<16xi32> -> tensor<?xi32>, tensor<?xi32>
  %text, %image = moma.modality_partition %ids groups ["text", "image"]
      ranges [array<i64: 0, 4, 8196, 65536>, array<i64: 4, 8196>]
      : tensor<16xi32> -> tensor<?xi32>, tensor<?xi32>
  // CHECK: %[[XT:.*]] = moma.gather_tokens %{{.*}}[%[[PART]]#0] : tensor<16x64xf32>, tensor<?xi32> -> tensor<?x64xf32>
  %xt = moma.gather_tokens %x[%text] : tensor<16x64xf32>, tensor<?xi32> -> tensor<?x64xf32>
  // CHECK: %[[S:.*]] = moma.router %[[XT]], %{{.*}} noise %{{.*}} : tensor<?x64xf32>, tensor<4x64xf32>, tensor<?x4xf32> -> tensor<?x4xf32>
  %s = moma.router %xt, %w noise %noise : tensor<?x64xf32>, tensor<4x64xf32>, tensor<?x4xf32> -> tensor<?x4xf32>
  // CHECK: moma.expert_choice %[[S]] capacity_factor = 1.250000e+00 : tensor<?x4xf32> -> tensor<4x?xi32>, tensor<4x?xf32>
  %idx, %gates = moma.expert_choice %s capacity_factor = 1.25 : tensor<?x4xf32> -> tensor<4x?xi32>, tensor<4x?xf32>
  // CHECK: %[[R:.*]] = moma.router %{{.*}}, %{{.*}} : tensor<16x64xf32>, tensor<1x64xf32> -> tensor<16x1xf32>
  %r = moma.router %x, %wmod : tensor<16x64xf32>, tensor<1x64xf32> -> tensor<16x1xf32>
  // CHECK: moma.mod_select %[[R]] capacity = 2.500000e-01 : tensor<16x1xf32> -> tensor<4xi32>, tensor<4xf32>
  %sel, %rsel = moma.mod_select %r capacity = 0.25 : tensor<16x1xf32> -> tensor<4xi32>, tensor<4xf32>
  return %idx, %gates, %sel, %rsel, %image : tensor<4x?xi32>, tensor<4x?xf32>, tensor<4xi32>, tensor<4xf32>, tensor<?xi32>
}

// CHECK-LABEL: func.func @experts
func.func @experts(%x: tensor<?x64xf32>, %rows: tensor<?xi32>, %idx: tensor<4x?xi32>, %gates: tensor<4x?xf32>,
                   %w1: tensor<4x176x64xf32>, %w2: tensor<4x64x176xf32>, %acc: tensor<16x64xf32>) -> tensor<16x64xf32> {
  // CHECK: %[[XE:.*]] = moma.gather_tokens %{{.*}} : tensor<?x64xf32>, tensor<4x?xi32> -> tensor<4x?x64xf32>
  %xe = moma.gather_tokens %x[%idx] : tensor<?x64xf32>, tensor<4x?xi32> -> tensor<4x?x64xf32>
  // CHECK: %[[YE:.*]] = moma.swiglu %[[XE]], %{{.*}}, %{{.*}}, %{{.*}} : tensor<4x?x64xf32>, tensor<4x176x64xf32>, tensor<4x64x176xf32>
  %ye = moma.swiglu %xe, %w1, %w1, %w2 : tensor<4x?x64xf32>, tensor<4x176x64xf32>, tensor<4x64x176xf32>
  // CHECK: %[[GR:.*]] = moma.gather_tokens %{{.*}} : tensor<?xi32>, tensor<4x?xi32> -> tensor<4x?xi32>
  %global = moma.gather_tokens %rows[%idx] : tensor<?xi32>, tensor<4x?xi32> -> tensor<4x?xi32>
  // CHECK: moma.scatter_add_tokens %[[YE]] into %{{.*}}[%[[GR]]] weights %{{.*}} : tensor<4x?x64xf32>, tensor<4x?xi32>, tensor<4x?xf32> into tensor<16x64xf32>
  %out = moma.scatter_add_tokens %ye into %acc[%global] weights %gates
      : tensor<4x?x64xf32>, tensor<4x?xi32>, tensor<4x?xf32> into tensor<16x64xf32>
  return %out : tensor<16x64xf32>
}

// CHECK-LABEL: func.func @single_expert_and_linear
func.func @single_expert_and_linear(%x: tensor<?x64xf32>, %rows: tensor<?xi32>, %w1: tensor<176x64xf32>,
                                    %w2: tensor<64x176xf32>, %acc: tensor<16x64xf32>,
                                    %xe: tensor<4x?x64xf32>, %we: tensor<4x32x64xf32>) -> (tensor<16x64xf32>, tensor<4x?x32xf32>) {
  // CHECK: %[[Y:.*]] = moma.swiglu %{{.*}} : tensor<?x64xf32>, tensor<176x64xf32>, tensor<64x176xf32>
  %y = moma.swiglu %x, %w1, %w1, %w2 : tensor<?x64xf32>, tensor<176x64xf32>, tensor<64x176xf32>
  // CHECK: moma.scatter_add_tokens %[[Y]] into %{{.*}}[%{{.*}}] : tensor<?x64xf32>, tensor<?xi32> into tensor<16x64xf32>
  %out = moma.scatter_add_tokens %y into %acc[%rows] : tensor<?x64xf32>, tensor<?xi32> into tensor<16x64xf32>
  // CHECK: moma.linear %{{.*}}, %{{.*}} : tensor<4x?x64xf32>, tensor<4x32x64xf32> -> tensor<4x?x32xf32>
  %stacked = moma.linear %xe, %we : tensor<4x?x64xf32>, tensor<4x32x64xf32> -> tensor<4x?x32xf32>
  return %out, %stacked : tensor<16x64xf32>, tensor<4x?x32xf32>
}

// CHECK-LABEL: func.func @mixture_of_depths
func.func @mixture_of_depths(%x: tensor<16x64xf32>, %y: tensor<4x64xf32>, %sel: tensor<4xi32>, %r: tensor<4xf32>,
                             %w1: tensor<32x64xf32>, %w2: tensor<1x32xf32>) -> (tensor<16x64xf32>, tensor<f32>) {
  // CHECK: moma.mod_merge %{{.*}}, %{{.*}}[%{{.*}}] gates %{{.*}} : tensor<16x64xf32>, tensor<4x64xf32>, tensor<4xi32>, tensor<4xf32>
  %out = moma.mod_merge %x, %y[%sel] gates %r : tensor<16x64xf32>, tensor<4x64xf32>, tensor<4xi32>, tensor<4xf32>
  // CHECK: %[[P:.*]] = moma.aux_router %{{.*}}, %{{.*}}, %{{.*}} : tensor<16x64xf32>, tensor<32x64xf32>, tensor<1x32xf32> -> tensor<16x1xf32>
  %p = moma.aux_router %x, %w1, %w2 : tensor<16x64xf32>, tensor<32x64xf32>, tensor<1x32xf32> -> tensor<16x1xf32>
  // CHECK: moma.aux_router_loss %[[P]], %{{.*}} : tensor<16x1xf32>, tensor<4xi32> -> tensor<f32>
  %l = moma.aux_router_loss %p, %sel : tensor<16x1xf32>, tensor<4xi32> -> tensor<f32>
  return %out, %l : tensor<16x64xf32>, tensor<f32>
}

// Causal routing by the auxiliary routers (MODEL_SPEC section 6).
// CHECK-LABEL: func.func @causal_routing
func.func @causal_routing(%s: tensor<?x4xf32>, %p: tensor<?x4xf32>, %batch: tensor<4x?xi32>)
    -> (tensor<4x?xi32>, tensor<4x?xf32>, tensor<f32>) {
  // CHECK: moma.causal_route %{{.*}}, %{{.*}} : tensor<?x4xf32>, tensor<?x4xf32> -> tensor<4x?xi32>, tensor<4x?xf32>
  %i, %g = moma.causal_route %s, %p : tensor<?x4xf32>, tensor<?x4xf32> -> tensor<4x?xi32>, tensor<4x?xf32>
  // CHECK: moma.routing_disagreement %{{.*}}, %{{.*}} : tensor<?x4xf32>, tensor<4x?xi32> -> tensor<f32>
  %d = moma.routing_disagreement %p, %batch : tensor<?x4xf32>, tensor<4x?xi32> -> tensor<f32>
  return %i, %g, %d : tensor<4x?xi32>, tensor<4x?xf32>, tensor<f32>
}

// CHECK-LABEL: func.func @transformer
func.func @transformer(%table: tensor<512x64xf32>, %ids: tensor<16xi32>, %pos: tensor<16xi32>, %seq: tensor<16xi32>,
                       %norm: tensor<64xf32>, %qw: tensor<4x16xf32>, %qb: tensor<4x16xf32>, %wq: tensor<64x64xf32>,
                       %wout: tensor<512x64xf32>, %targets: tensor<16xi32>) -> (tensor<f32>, tensor<f32>, tensor<f32>) {
  // CHECK: %[[H:.*]] = moma.embed %{{.*}}[%{{.*}}] : tensor<512x64xf32>, tensor<16xi32> -> tensor<16x64xf32>
  %h = moma.embed %table[%ids] : tensor<512x64xf32>, tensor<16xi32> -> tensor<16x64xf32>
  // CHECK: %[[N:.*]] = moma.rms_norm %[[H]], %{{.*}} epsilon = 1.000000e-05 : tensor<16x64xf32>, tensor<64xf32>
  %n = moma.rms_norm %h, %norm epsilon = 1.0e-5 : tensor<16x64xf32>, tensor<64xf32>
  // CHECK: %[[Q:.*]] = moma.linear %[[N]], %{{.*}} : tensor<16x64xf32>, tensor<64x64xf32> -> tensor<16x64xf32>
  %q = moma.linear %n, %wq : tensor<16x64xf32>, tensor<64x64xf32> -> tensor<16x64xf32>
  // CHECK: %[[QN:.*]] = moma.head_layer_norm %[[Q]], %{{.*}}, %{{.*}} epsilon = 1.000000e-05 : tensor<16x64xf32>, tensor<4x16xf32>
  %qn = moma.head_layer_norm %q, %qw, %qb epsilon = 1.0e-5 : tensor<16x64xf32>, tensor<4x16xf32>
  // CHECK: %[[QR:.*]] = moma.rope %[[QN]], %{{.*}} heads = 4 theta = 1.000000e+04 : tensor<16x64xf32>, tensor<16xi32>
  %qr = moma.rope %qn, %pos heads = 4 theta = 1.0e4 : tensor<16x64xf32>, tensor<16xi32>
  // CHECK: %[[O:.*]] = moma.attention %[[QR]], %[[QR]], %[[Q]], %{{.*}}, %{{.*}} heads = 4 scale = 2.500000e-01 : tensor<16x64xf32>, tensor<16xi32>
  %o = moma.attention %qr, %qr, %q, %pos, %seq heads = 4 scale = 0.25 : tensor<16x64xf32>, tensor<16xi32>
  // CHECK: %[[L:.*]] = moma.linear %[[O]], %{{.*}} : tensor<16x64xf32>, tensor<512x64xf32> -> tensor<16x512xf32>
  %logits = moma.linear %o, %wout : tensor<16x64xf32>, tensor<512x64xf32> -> tensor<16x512xf32>
  // CHECK: moma.cross_entropy %[[L]], %{{.*}} z_loss = 1.000000e-05 modalities ["text", "image"] ranges [array<i64: 0, 256>, array<i64: 256, 512>] : tensor<16x512xf32>, tensor<16xi32> -> tensor<f32>, tensor<f32>, tensor<f32>
  %loss, %text, %image = moma.cross_entropy %logits, %targets z_loss = 1.0e-5
      modalities ["text", "image"] ranges [array<i64: 0, 256>, array<i64: 256, 512>]
      : tensor<16x512xf32>, tensor<16xi32> -> tensor<f32>, tensor<f32>, tensor<f32>
  return %loss, %text, %image : tensor<f32>, tensor<f32>, tensor<f32>
}

// Decoding: new tokens against a key/value cache of 16 rows per sequence.
// CHECK-LABEL: func.func @cached_attention
func.func @cached_attention(%q: tensor<2x64xf32>, %kc: tensor<32x64xf32>, %vc: tensor<32x64xf32>,
                            %valid: tensor<32xf32>, %pos: tensor<2xi32>, %seq: tensor<2xi32>) -> tensor<2x64xf32> {
  // CHECK: moma.cached_attention %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} heads = 4 scale = 2.500000e-01 context = 16 : tensor<2x64xf32>, tensor<32x64xf32>, tensor<32xf32>, tensor<2xi32>
  %o = moma.cached_attention %q, %kc, %vc, %valid, %pos, %seq heads = 4 scale = 0.25 context = 16
      : tensor<2x64xf32>, tensor<32x64xf32>, tensor<32xf32>, tensor<2xi32>
  return %o : tensor<2x64xf32>
}

// A MoD layer's groups on the CUDA target: lists padded to the token count,
// counts in a tensor, expert choice and the aux objective over the valid
// rows, padded gathers and scatters.
// CHECK-LABEL: func.func @padded_groups
func.func @padded_groups(%ids: tensor<?xi32>, %x: tensor<?x64xf32>, %s: tensor<?x4xf32>,
                         %p: tensor<?x4xf32>, %acc: tensor<?x64xf32>) -> (tensor<?x64xf32>, tensor<f32>, tensor<4xf32>) {
  // CHECK: %[[PART:.*]]:2, %{{.*}} = moma.padded_modality_partition %{{.*}} groups ["text", "image"] ranges [array<i64: 0, 4>, array<i64: 4, 8>] : tensor<?xi32> -> (tensor<?xi32>, tensor<?xi32>), tensor<2xi32>
  %text, %image, %counts = moma.padded_modality_partition %ids groups ["text", "image"]
      ranges [array<i64: 0, 4>, array<i64: 4, 8>] : tensor<?xi32> -> (tensor<?xi32>, tensor<?xi32>), tensor<2xi32>
  %n = tensor.extract_slice %counts[0] [1] [1] : tensor<2xi32> to tensor<1xi32>
  // CHECK: moma.gather_tokens %{{.*}}[%[[PART]]#0] {padded} : tensor<?x64xf32>, tensor<?xi32> -> tensor<?x64xf32>
  %xt = moma.gather_tokens %x[%text] {padded} : tensor<?x64xf32>, tensor<?xi32> -> tensor<?x64xf32>
  // CHECK: moma.expert_choice %{{.*}} valid %{{.*}} capacity_factor = 1.000000e+00 : tensor<?x4xf32>, tensor<1xi32> -> tensor<4x?xi32>, tensor<4x?xf32>
  %idx, %gates = moma.expert_choice %s valid %n capacity_factor = 1.0 : tensor<?x4xf32>, tensor<1xi32> -> tensor<4x?xi32>, tensor<4x?xf32>
  %xe = moma.gather_tokens %xt[%idx] {padded} : tensor<?x64xf32>, tensor<4x?xi32> -> tensor<4x?x64xf32>
  %rows = moma.gather_tokens %text[%idx] : tensor<?xi32>, tensor<4x?xi32> -> tensor<4x?xi32>
  // CHECK: moma.scatter_add_tokens %{{.*}} into %{{.*}}[%{{.*}}] weights %{{.*}} {padded} : tensor<4x?x64xf32>, tensor<4x?xi32>, tensor<4x?xf32> into tensor<?x64xf32>
  %out = moma.scatter_add_tokens %xe into %acc[%rows] weights %gates {padded}
      : tensor<4x?x64xf32>, tensor<4x?xi32>, tensor<4x?xf32> into tensor<?x64xf32>
  // CHECK: moma.aux_router_loss %{{.*}}, %{{.*}} valid %{{.*}} : tensor<?x4xf32>, tensor<4x?xi32>, tensor<1xi32> -> tensor<f32>
  %l = moma.aux_router_loss %p, %idx valid %n : tensor<?x4xf32>, tensor<4x?xi32>, tensor<1xi32> -> tensor<f32>
  // CHECK: moma.aux_router_confusion %{{.*}}, %{{.*}} valid %{{.*}} : tensor<?x4xf32>, tensor<4x?xi32>, tensor<1xi32> -> tensor<4xf32>
  %c = moma.aux_router_confusion %p, %idx valid %n : tensor<?x4xf32>, tensor<4x?xi32>, tensor<1xi32> -> tensor<4xf32>
  return %out, %l, %c : tensor<?x64xf32>, tensor<f32>, tensor<4xf32>
}
