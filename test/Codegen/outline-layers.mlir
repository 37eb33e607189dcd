// RUN: moma-opt %s -split-input-file -moma-outline-layers | FileCheck %s

// Two layers that compute the same thing on their own weights become two
// calls of one function. What the layers share (here a table of the
// positions, which CSE left in layer 0) stays in the entry point, computed
// once; constants, empty tensors and fills are cloned into the function.
// A gradient written into an out-parameter is written by the function; a
// scalar loss stays a result.
// CHECK-LABEL: func.func @grad(
// CHECK-SAME: %[[X:[a-z0-9]+]]: tensor<4x8xf32> {{.*}}, %[[W0:[a-z0-9]+]]: tensor<8x8xf32> {{.*}}, %[[W1:[a-z0-9]+]]: tensor<8x8xf32> {{.*}}, %[[POS:[a-z0-9]+]]: tensor<4xf32> {{.*}}, %[[G0:[a-z0-9]+]]: memref<4x8xf32>, %[[G1:[a-z0-9]+]]: memref<4x8xf32>, %[[LOSS:[a-z0-9]+]]: memref<f32>
// CHECK: %[[TABLE:.*]] = arith.mulf %[[POS]], %[[POS]] : tensor<4xf32>
// CHECK: %[[H0:.*]]:2 = call @grad_layers_0_0(%[[X]], %[[W0]], %[[TABLE]], %[[G0]])
// CHECK: %[[H1:.*]]:2 = call @grad_layers_0_0(%[[H0]]#0, %[[W1]], %[[TABLE]], %[[G1]])
// CHECK-NOT: call
// CHECK: %[[LAST:.*]] = tensor.extract_slice %[[H1]]#0[1, 1]
// CHECK: %[[FIRST:.*]] = arith.addf %[[H0]]#1, %[[H1]]#1 : tensor<f32>
// CHECK: %[[SUM:.*]] = arith.addf %[[FIRST]], %[[LAST]] : tensor<f32>
// CHECK: bufferization.materialize_in_destination %[[SUM]] in restrict writable %[[LOSS]]
// CHECK-NOT: materialize_in_destination
// CHECK: return

// CHECK-LABEL: func.func private @grad_layers_0_0(
// CHECK-SAME: %[[X:[a-z0-9]+]]: tensor<4x8xf32>, %[[W:[a-z0-9]+]]: tensor<8x8xf32>, %[[TABLE:[a-z0-9]+]]: tensor<4xf32>, %[[G:[a-z0-9]+]]: memref<4x8xf32>) -> (tensor<4x8xf32>, tensor<f32>)
// CHECK-SAME: moma.layer_function
// CHECK-DAG: %[[ZERO:.*]] = arith.constant 0.000000e+00 : f32
// CHECK-DAG: %[[EMPTY:.*]] = tensor.empty() : tensor<4x8xf32>
// CHECK: %[[FILL:.*]] = linalg.fill ins(%[[ZERO]] : f32) outs(%[[EMPTY]] : tensor<4x8xf32>)
// CHECK: %[[MM:.*]] = linalg.matmul ins(%[[X]], %[[W]] : tensor<4x8xf32>, tensor<8x8xf32>) outs(%[[FILL]] : tensor<4x8xf32>)
// CHECK: linalg.broadcast ins(%[[TABLE]] : tensor<4xf32>)
// CHECK: %[[H:.*]] = arith.addf %[[X]],
// CHECK: %[[PART:.*]] = tensor.extract_slice %[[H]][0, 0] [1, 1] [1, 1]
// CHECK: bufferization.materialize_in_destination %[[MM]] in restrict writable %[[G]]
// CHECK: return %[[H]], %{{.*}} : tensor<4x8xf32>, tensor<f32>
// CHECK-NOT: func.func private @grad_layers_1
func.func @grad(%x: tensor<4x8xf32> {moma.param = "inputs"},
                %w0: tensor<8x8xf32> {moma.param = "layers.0.ffn.w"},
                %w1: tensor<8x8xf32> {moma.param = "layers.1.ffn.w"},
                %pos: tensor<4xf32> {moma.param = "positions"},
                %g0: memref<4x8xf32>, %g1: memref<4x8xf32>,
                %loss: memref<f32>) {
  %zero = arith.constant 0.0 : f32
  %empty = tensor.empty() : tensor<4x8xf32>
  %fill = linalg.fill ins(%zero : f32) outs(%empty : tensor<4x8xf32>) -> tensor<4x8xf32> loc("layers.0.ffn")
  %table = arith.mulf %pos, %pos : tensor<4xf32> loc("layers.0.attention")
  %mm0 = linalg.matmul ins(%x, %w0 : tensor<4x8xf32>, tensor<8x8xf32>) outs(%fill : tensor<4x8xf32>) -> tensor<4x8xf32> loc("layers.0.ffn")
  %b0 = linalg.broadcast ins(%table : tensor<4xf32>) outs(%empty : tensor<4x8xf32>) dimensions = [1] loc("layers.0.attention")
  %s0 = arith.addf %mm0, %b0 : tensor<4x8xf32> loc("layers.0.attention")
  %h0 = arith.addf %x, %s0 : tensor<4x8xf32> loc("layers.0.residual")
  %p0 = tensor.extract_slice %h0[0, 0] [1, 1] [1, 1] : tensor<4x8xf32> to tensor<f32> loc("layers.0.residual")
  %mm1 = linalg.matmul ins(%h0, %w1 : tensor<4x8xf32>, tensor<8x8xf32>) outs(%fill : tensor<4x8xf32>) -> tensor<4x8xf32> loc("layers.1.ffn")
  %b1 = linalg.broadcast ins(%table : tensor<4xf32>) outs(%empty : tensor<4x8xf32>) dimensions = [1] loc("layers.1.attention")
  %s1 = arith.addf %mm1, %b1 : tensor<4x8xf32> loc("layers.1.attention")
  %h1 = arith.addf %h0, %s1 : tensor<4x8xf32> loc("layers.1.residual")
  %p1 = tensor.extract_slice %h1[0, 0] [1, 1] [1, 1] : tensor<4x8xf32> to tensor<f32> loc("layers.1.residual")
  %p2 = tensor.extract_slice %h1[1, 1] [1, 1] [1, 1] : tensor<4x8xf32> to tensor<f32> loc("output")
  %p3 = arith.addf %p0, %p1 : tensor<f32> loc("output")
  %sum = arith.addf %p3, %p2 : tensor<f32> loc("output")
  bufferization.materialize_in_destination %mm0 in restrict writable %g0 : (tensor<4x8xf32>, memref<4x8xf32>) -> () loc("output")
  bufferization.materialize_in_destination %mm1 in restrict writable %g1 : (tensor<4x8xf32>, memref<4x8xf32>) -> () loc("output")
  bufferization.materialize_in_destination %sum in restrict writable %loss : (tensor<f32>, memref<f32>) -> () loc("output")
  return
}

// -----

// Each layer's rows of the router noise, an argument all layers read, are
// a slice at the layer's offset: the offsets are passed in.
// CHECK-LABEL: func.func @forward(
// CHECK-SAME: %[[NOISE:[a-z0-9]+]]: tensor<2x4x3xf32>
// CHECK-DAG: %[[C0:.*]] = arith.constant 0 : index
// CHECK-DAG: %[[C1:.*]] = arith.constant 1 : index
// CHECK: %[[H0:.*]] = call @forward_layers_0_0(%{{.*}}, %{{.*}}, %[[NOISE]], %[[C0]], %[[C0]], %[[C0]])
// CHECK: call @forward_layers_0_0(%[[H0]], %{{.*}}, %[[NOISE]], %[[C1]], %[[C0]], %[[C0]])
// CHECK-LABEL: func.func private @forward_layers_0_0(
// CHECK-SAME: %[[NOISE:[a-z0-9]+]]: tensor<2x4x3xf32>, %[[L:[a-z0-9]+]]: index, %[[R:[a-z0-9]+]]: index, %[[E:[a-z0-9]+]]: index
// CHECK: tensor.extract_slice %[[NOISE]][%[[L]], %[[R]], %[[E]]] [1, 4, 3] [1, 1, 1] : tensor<2x4x3xf32> to tensor<4x3xf32>
func.func @forward(%noise: tensor<2x4x3xf32> {moma.param = "router_noise"},
                   %h: tensor<4x3xf32> {moma.param = "inputs"},
                   %w0: tensor<4x3xf32> {moma.param = "layers.0.moe.text.router.weight"},
                   %w1: tensor<4x3xf32> {moma.param = "layers.1.moe.text.router.weight"}) -> tensor<4x3xf32> {
  %l0 = arith.mulf %h, %w0 : tensor<4x3xf32> loc("layers.0.moe.text")
  %n0 = tensor.extract_slice %noise[0, 0, 0] [1, 4, 3] [1, 1, 1] : tensor<2x4x3xf32> to tensor<4x3xf32> loc("layers.0.moe.text")
  %h0 = arith.addf %l0, %n0 : tensor<4x3xf32> loc("layers.0.moe.text")
  %l1 = arith.mulf %h0, %w1 : tensor<4x3xf32> loc("layers.1.moe.text")
  %n1 = tensor.extract_slice %noise[1, 0, 0] [1, 4, 3] [1, 1, 1] : tensor<2x4x3xf32> to tensor<4x3xf32> loc("layers.1.moe.text")
  %h1 = arith.addf %l1, %n1 : tensor<4x3xf32> loc("layers.1.moe.text")
  return %h1 : tensor<4x3xf32>
}

// -----

// AdamW's new parameters are written in place of the old ones: the
// function pairs its argument and out-parameter the same way.
// CHECK-LABEL: func.func private @optimizer_step_layers_0_0(
// CHECK-SAME: %{{.*}}: tensor<8xf32> {moma.param = "in_place.0"}
// CHECK-SAME: %{{.*}}: memref<8xf32> {moma.in_place, moma.result = "in_place.0"}
func.func @optimizer_step(%w: tensor<8xf32> {moma.param = "layers.0.w"},
                          %g: tensor<8xf32> {moma.param = "grad.layers.0.w"},
                          %out: memref<8xf32> {moma.in_place, moma.result = "layers.0.w"}) {
  %new = arith.subf %w, %g : tensor<8xf32> loc("layers.0.w")
  bufferization.materialize_in_destination %new in restrict writable %out : (tensor<8xf32>, memref<8xf32>) -> () loc("output")
  return
}

// -----

// Scalar arithmetic on what the entry point computed (a clip factor from a
// norm) is recomputed in the function from the tensor it comes from, so
// that a device target does not read the scalar back to pass it. A host
// scalar argument (batch_rows) is still read in the entry point.
// CHECK-LABEL: func.func @optimizer_step(
// CHECK-SAME: %[[G:[a-z0-9]+]]: tensor<4xf32> {{.*}}, %[[ROWS:[a-z0-9]+]]: tensor<i64> {{.*}}, %[[W0:[a-z0-9]+]]: tensor<4xf32> {{.*}}, %[[W1:[a-z0-9]+]]: tensor<4xf32>
// CHECK: %[[SQ:.*]] = arith.mulf %[[G]], %[[G]] : tensor<4xf32>
// CHECK: %[[R:.*]] = tensor.extract %[[ROWS]][] : tensor<i64>
// CHECK: call @optimizer_step_layers_0_0(%[[W0]], %[[SQ]], %[[R]], %{{.*}})
// CHECK: call @optimizer_step_layers_0_0(%[[W1]], %[[SQ]], %[[R]], %{{.*}})
// CHECK-LABEL: func.func private @optimizer_step_layers_0_0(
// CHECK-SAME: %[[W:[a-z0-9]+]]: tensor<4xf32>, %[[SQ:[a-z0-9]+]]: tensor<4xf32>, %[[R:[a-z0-9]+]]: i64, %{{.*}}: memref<4xf32>)
// CHECK-DAG: %[[C0:.*]] = arith.constant 0 : index
// CHECK: %[[E:.*]] = tensor.extract %[[SQ]][%[[C0]]] : tensor<4xf32>
// CHECK: %[[CLIP:.*]] = math.sqrt %[[E]] : f32
// CHECK: %[[RF:.*]] = arith.sitofp %[[R]] : i64 to f32
// CHECK: %[[S:.*]] = arith.mulf %[[CLIP]], %[[RF]] : f32
// CHECK: linalg.fill ins(%[[S]] : f32)
func.func @optimizer_step(%g: tensor<4xf32> {moma.param = "grad_norm_parts"},
                          %rows: tensor<i64> {moma.param = "batch_rows", moma.host_scalar},
                          %w0: tensor<4xf32> {moma.param = "layers.0.w"},
                          %w1: tensor<4xf32> {moma.param = "layers.1.w"},
                          %o0: memref<4xf32>, %o1: memref<4xf32>) {
  %c0 = arith.constant 0 : index
  %sq = arith.mulf %g, %g : tensor<4xf32> loc("clip")
  %e = tensor.extract %sq[%c0] : tensor<4xf32> loc("clip")
  %clip = math.sqrt %e : f32 loc("clip")
  %r = tensor.extract %rows[] : tensor<i64> loc("clip")
  %rf = arith.sitofp %r : i64 to f32 loc("clip")
  %s = arith.mulf %clip, %rf : f32 loc("clip")
  %empty = tensor.empty() : tensor<4xf32>
  %b0 = linalg.fill ins(%s : f32) outs(%empty : tensor<4xf32>) -> tensor<4xf32> loc("layers.0.update")
  %u0 = arith.subf %w0, %b0 : tensor<4xf32> loc("layers.0.update")
  %b1 = linalg.fill ins(%s : f32) outs(%empty : tensor<4xf32>) -> tensor<4xf32> loc("layers.1.update")
  %u1 = arith.subf %w1, %b1 : tensor<4xf32> loc("layers.1.update")
  bufferization.materialize_in_destination %u0 in restrict writable %o0 : (tensor<4xf32>, memref<4xf32>) -> () loc("output")
  bufferization.materialize_in_destination %u1 in restrict writable %o1 : (tensor<4xf32>, memref<4xf32>) -> () loc("output")
  return
}

// -----

// A scalar a layer computes from its tensors by pure arithmetic (a group's
// token count, as the float a mean divides by) and that the entry point
// uses is not returned: the tensor is, and the entry point recomputes the
// scalar after the call, so that a device target need not read it back.
// CHECK-LABEL: func.func @grad(
// CHECK: %[[R0:.*]]:2 = call @grad_layers_0_0(
// CHECK-NEXT: %[[E0:.*]] = tensor.extract %[[R0]]#1[] : tensor<f32>
// CHECK-NEXT: %[[M0:.*]] = arith.mulf %[[E0]], %{{.*}} : f32
// CHECK-NEXT: %[[R1:.*]] = call @grad_layers_1_0(%[[R0]]#0,
// CHECK-NEXT: %[[E1:.*]] = tensor.extract %[[R1]][] : tensor<f32>
// CHECK-NEXT: %[[M1:.*]] = arith.mulf %[[E1]], %{{.*}} : f32
// CHECK-NEXT: arith.addf %[[M0]], %[[M1]] : f32
// CHECK-LABEL: func.func private @grad_layers_0_0(
// CHECK-SAME: -> (tensor<4xf32>, tensor<f32>)
func.func @grad(%x: tensor<4xf32> {moma.param = "inputs"},
                %w0: tensor<4xf32> {moma.param = "layers.0.w"},
                %w1: tensor<4xf32> {moma.param = "layers.1.w"},
                %out: memref<f32>) {
  %two = arith.constant 2.0 : f32
  %zero = arith.constant 0.0 : f32
  %empty = tensor.empty() : tensor<f32>
  %h0 = arith.mulf %x, %w0 : tensor<4xf32> loc("layers.0.ffn")
  %init0 = linalg.fill ins(%zero : f32) outs(%empty : tensor<f32>) -> tensor<f32> loc("layers.0.ffn")
  %s0 = linalg.reduce ins(%h0 : tensor<4xf32>) outs(%init0 : tensor<f32>) dimensions = [0] (%a: f32, %b: f32) { %c = arith.addf %a, %b : f32 linalg.yield %c : f32 } loc("layers.0.ffn")
  %e0 = tensor.extract %s0[] : tensor<f32> loc("layers.0.ffn")
  %m0 = arith.mulf %e0, %two : f32 loc("layers.0.ffn")
  %h1 = arith.mulf %h0, %w1 : tensor<4xf32> loc("layers.1.ffn")
  %init1 = linalg.fill ins(%zero : f32) outs(%empty : tensor<f32>) -> tensor<f32> loc("layers.1.ffn")
  %s1 = linalg.reduce ins(%h1 : tensor<4xf32>) outs(%init1 : tensor<f32>) dimensions = [0] (%a: f32, %b: f32) { %c = arith.addf %a, %b : f32 linalg.yield %c : f32 } loc("layers.1.ffn")
  %e1 = tensor.extract %s1[] : tensor<f32> loc("layers.1.ffn")
  %m1 = arith.mulf %e1, %two : f32 loc("layers.1.ffn")
  %sum = arith.addf %m0, %m1 : f32 loc("output")
  %t = tensor.from_elements %sum : tensor<f32> loc("output")
  bufferization.materialize_in_destination %t in restrict writable %out : (tensor<f32>, memref<f32>) -> () loc("output")
  return
}
