// RUN: moma-opt %s -split-input-file -moma-synthesize-grad | FileCheck %s

// A linear layer into the loss: the gradient walks back through
// cross_entropy, linear and embed, and returns loss, per-modality losses and
// one grad.<name> per parameter.
// CHECK-LABEL: func.func @grad
// CHECK-SAME: -> (tensor<f32> {moma.result = "loss"}, tensor<f32> {moma.result = "loss.all"}, tensor<8x16xf32> {moma.result = "grad.emb"}, tensor<8x16xf32> {moma.result = "grad.out"})
// CHECK: %[[H:.*]] = moma.embed
// CHECK: %[[L:.*]] = moma.linear %[[H]], %[[OUT:.*]] :
// CHECK: %[[LOSS:.*]], %[[ALL:.*]] = moma.cross_entropy %[[L]]
// CHECK: %[[ONE:.*]] = arith.constant dense<1.000000e+00> : tensor<f32>
// CHECK: %[[DL:.*]] = moma.cross_entropy_grad %[[L]], %{{.*}}, %[[ONE]]
// CHECK: %[[DH:.*]] = moma.matmul %[[DL]], %[[OUT]] :
// CHECK: %[[DOUT:.*]] = moma.matmul %[[DL]] transposed, %[[H]] :
// CHECK: %[[DEMB:.*]] = moma.scatter_add_tokens %[[DH]] into
// CHECK: return %[[LOSS]], %[[ALL]], %[[DEMB]], %[[DOUT]]
func.func @forward(%tokens: tensor<2x5xi32> {moma.param = "tokens"},
                   %emb: tensor<8x16xf32> {moma.param = "emb"},
                   %out: tensor<8x16xf32> {moma.param = "out"})
    -> (tensor<f32> {moma.result = "loss"}, tensor<f32> {moma.result = "loss.all"}) {
  %x, %y = moma.shift_tokens %tokens : tensor<2x5xi32> -> tensor<8xi32>
  %h = moma.embed %emb[%x] : tensor<8x16xf32>, tensor<8xi32> -> tensor<8x16xf32>
  %l = moma.linear %h, %out : tensor<8x16xf32>, tensor<8x16xf32> -> tensor<8x8xf32>
  %loss, %all = moma.cross_entropy %l, %y z_loss = 0.0 modalities ["all"] ranges [array<i64: 0, 8>]
      : tensor<8x8xf32>, tensor<8xi32> -> tensor<f32>, tensor<f32>
  return %loss, %all : tensor<f32>, tensor<f32>
}

// -----

// A value used twice accumulates both gradients (the residual), and a
// parameter the loss does not reach (an auxiliary router) gets zeros.
// CHECK-LABEL: func.func @grad
// CHECK: %[[N:.*]] = moma.rms_norm %[[H:.*]], %{{.*}} epsilon
// CHECK: %[[R:.*]] = arith.addf %[[H]], %[[N]]
// CHECK: moma.rms_norm_grad %[[H]]
// CHECK: %[[SUM:.*]] = arith.addf
// CHECK: moma.scatter_add_tokens %[[SUM]] into
// CHECK: %[[ZERO:.*]] = arith.constant dense<0.000000e+00> : tensor<4x16xf32>
// CHECK: return {{.*}}, %[[ZERO]] :
func.func @forward(%tokens: tensor<2x5xi32> {moma.param = "tokens"},
                   %emb: tensor<8x16xf32> {moma.param = "emb"},
                   %norm: tensor<16xf32> {moma.param = "norm"},
                   %out: tensor<8x16xf32> {moma.param = "out"},
                   %aux: tensor<4x16xf32> {moma.param = "aux"})
    -> (tensor<f32> {moma.result = "loss"}, tensor<f32> {moma.result = "loss.all"}) {
  %x, %y = moma.shift_tokens %tokens : tensor<2x5xi32> -> tensor<8xi32>
  %h = moma.embed %emb[%x] : tensor<8x16xf32>, tensor<8xi32> -> tensor<8x16xf32>
  %n = moma.rms_norm %h, %norm epsilon = 1.0e-5 : tensor<8x16xf32>, tensor<16xf32>
  %r = arith.addf %h, %n : tensor<8x16xf32>
  %l = moma.linear %r, %out : tensor<8x16xf32>, tensor<8x16xf32> -> tensor<8x8xf32>
  %loss, %all = moma.cross_entropy %l, %y z_loss = 0.0 modalities ["all"] ranges [array<i64: 0, 8>]
      : tensor<8x8xf32>, tensor<8xi32> -> tensor<f32>, tensor<f32>
  return %loss, %all : tensor<f32>, tensor<f32>
}

// -----

// Routing is not differentiated, gates are: expert choice passes the gates'
// gradient to the scores at the chosen entries.
// CHECK-LABEL: func.func @grad
// CHECK: %[[S:.*]] = moma.router %[[X:.*]], %[[W:[a-z0-9]+]]
// CHECK: %[[IDX:.*]], %{{.*}} = moma.expert_choice %[[S]]
// CHECK: moma.scatter_add_tokens_grad
// CHECK: %[[DS:.*]] = moma.gate_grad %[[S]], %[[IDX]]
// CHECK: moma.router_grad %[[X]], %[[W]], %[[S]], %[[DS]]
func.func @forward(%tokens: tensor<2x5xi32> {moma.param = "tokens"},
                   %emb: tensor<8x16xf32> {moma.param = "emb"},
                   %router: tensor<2x16xf32> {moma.param = "router"},
                   %out: tensor<8x16xf32> {moma.param = "out"})
    -> (tensor<f32> {moma.result = "loss"}, tensor<f32> {moma.result = "loss.all"}) {
  %x, %y = moma.shift_tokens %tokens : tensor<2x5xi32> -> tensor<8xi32>
  %h = moma.embed %emb[%x] : tensor<8x16xf32>, tensor<8xi32> -> tensor<8x16xf32>
  %s = moma.router %h, %router : tensor<8x16xf32>, tensor<2x16xf32> -> tensor<8x2xf32>
  %idx, %gates = moma.expert_choice %s capacity_factor = 1.0 : tensor<8x2xf32> -> tensor<2x4xi32>, tensor<2x4xf32>
  %xe = moma.gather_tokens %h[%idx] : tensor<8x16xf32>, tensor<2x4xi32> -> tensor<2x4x16xf32>
  %c = moma.scatter_add_tokens %xe into %h[%idx] weights %gates
      : tensor<2x4x16xf32>, tensor<2x4xi32>, tensor<2x4xf32> into tensor<8x16xf32>
  %l = moma.linear %c, %out : tensor<8x16xf32>, tensor<8x16xf32> -> tensor<8x8xf32>
  %loss, %all = moma.cross_entropy %l, %y z_loss = 0.0 modalities ["all"] ranges [array<i64: 0, 8>]
      : tensor<8x8xf32>, tensor<8xi32> -> tensor<f32>, tensor<f32>
  return %loss, %all : tensor<f32>, tensor<f32>
}

// -----

// Router noise (moma.no_grad) is data: the noisy scores are differentiated
// through the router, but the noise argument gets no grad.<name> result.
// CHECK-LABEL: func.func @grad
// CHECK-SAME: -> (tensor<f32> {moma.result = "loss"}, tensor<f32> {moma.result = "loss.all"}, tensor<8x16xf32> {moma.result = "grad.emb"}, tensor<2x16xf32> {moma.result = "grad.router"}, tensor<8x16xf32> {moma.result = "grad.out"})
// CHECK: %[[S:.*]] = moma.router %[[H:.*]], %[[W:.*]] noise %arg4
// CHECK: moma.router_grad %[[H]], %[[W]], %[[S]]
func.func @forward(%tokens: tensor<2x5xi32> {moma.param = "tokens"},
                   %emb: tensor<8x16xf32> {moma.param = "emb"},
                   %router: tensor<2x16xf32> {moma.param = "router"},
                   %out: tensor<8x16xf32> {moma.param = "out"},
                   %noise: tensor<8x2xf32> {moma.param = "gumbel_noise", moma.no_grad})
    -> (tensor<f32> {moma.result = "loss"}, tensor<f32> {moma.result = "loss.all"}) {
  %x, %y = moma.shift_tokens %tokens : tensor<2x5xi32> -> tensor<8xi32>
  %h = moma.embed %emb[%x] : tensor<8x16xf32>, tensor<8xi32> -> tensor<8x16xf32>
  %s = moma.router %h, %router noise %noise : tensor<8x16xf32>, tensor<2x16xf32>, tensor<8x2xf32> -> tensor<8x2xf32>
  %idx, %gates = moma.expert_choice %s capacity_factor = 1.0 : tensor<8x2xf32> -> tensor<2x4xi32>, tensor<2x4xf32>
  %xe = moma.gather_tokens %h[%idx] : tensor<8x16xf32>, tensor<2x4xi32> -> tensor<2x4x16xf32>
  %c = moma.scatter_add_tokens %xe into %h[%idx] weights %gates : tensor<2x4x16xf32>, tensor<2x4xi32>, tensor<2x4xf32> into tensor<8x16xf32>
  %l = moma.linear %c, %out : tensor<8x16xf32>, tensor<8x16xf32> -> tensor<8x8xf32>
  %loss, %all = moma.cross_entropy %l, %y z_loss = 0.0 modalities ["all"] ranges [array<i64: 0, 8>]
      : tensor<8x8xf32>, tensor<8xi32> -> tensor<f32>, tensor<f32>
  return %loss, %all : tensor<f32>, tensor<f32>
}
