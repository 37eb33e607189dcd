// RUN: moma-opt %s -moma-synthesize-optimizer-step="grad-clip=1.0 weight-decay=0.1" | FileCheck %s
// RUN: moma-opt %s -moma-synthesize-optimizer-step="grad-clip=0.0" | FileCheck %s --check-prefix=NOCLIP
// RUN: moma-opt %s -moma-synthesize-optimizer-step="aux-routers=true step=optimizer_step_aux weight-decay=0.1" | FileCheck %s --check-prefix=AUX

// Weight decay by name (matrices yes, norms no); auxiliary routers are not
// trained; the gradient norm is taken over all trained gradients at once.
// CHECK-LABEL: func.func @optimizer_step
// CHECK-SAME: %[[W:[a-z0-9]+]]: tensor<4x4xf32> {moma.param = "layers.0.attention.wq.weight"}
// CHECK-SAME: %[[N:[a-z0-9]+]]: tensor<4xf32> {moma.param = "norm.weight"}
// CHECK-SAME: %[[GW:[a-z0-9]+]]: tensor<4x4xf32> {moma.param = "grad.layers.0.attention.wq.weight"}
// CHECK-SAME: {moma.param = "optim.v.norm.weight"}
// CHECK-SAME: %[[SCHEDULE:[a-z0-9]+]]: tensor<3xf32> {moma.param = "schedule"}
// CHECK-NOT: aux_router
// CHECK-SAME: {moma.result = "grad_norm"}
// CHECK: %[[NORM:.*]] = moma.global_norm %[[GW]], %{{.*}} : tensor<4x4xf32>, tensor<4xf32> -> tensor<f32>
// A non-finite norm (NaN fails every ordered comparison) makes the clip
// factor NaN, which the updates take as "leave everything as it is".
// CHECK: %[[NORMV:.*]] = tensor.extract %[[NORM]][]
// CHECK: %[[FACTOR:.*]] = arith.minimumf
// CHECK: %[[FINITE:.*]] = arith.cmpf olt, %[[NORMV]], %{{.*}} : f32
// CHECK: %[[GUARDED:.*]] = arith.select %[[FINITE]], %[[FACTOR]], %{{.*}} : f32
// CHECK: %[[CLIP:.*]] = tensor.from_elements %[[GUARDED]]
// CHECK: moma.adamw_update %[[W]], %[[GW]], {{.*}} schedule %[[SCHEDULE]] clip %[[CLIP]] beta1 = 9.000000e-01 beta2 = 0.94999999999999996 eps = 1.000000e-05 weight_decay = 1.000000e-01
// CHECK: moma.adamw_update %[[N]], {{.*}} weight_decay = 0.000000e+00
// With aux-routers (MODEL_SPEC section 6), exactly the auxiliary routers,
// without weight decay, in a function of the name asked for.
// AUX-LABEL: func.func @optimizer_step_aux
// AUX-SAME: {moma.param = "layers.0.mod.aux_router.w1.weight"}
// AUX-NOT: attention
// AUX: moma.adamw_update {{.*}} weight_decay = 0.000000e+00
// AUX-NOT: moma.adamw_update
// NOCLIP-NOT: arith.minimumf
// NOCLIP-DAG: %[[ONE:.*]] = arith.constant 1.000000e+00 : f32
// NOCLIP-DAG: %[[NAN:.*]] = arith.constant 0x7FC00000 : f32
// NOCLIP: arith.select %{{.*}}, %[[ONE]], %[[NAN]] : f32
func.func @forward(%tokens: tensor<2x5xi32> {moma.param = "tokens"},
                   %wq: tensor<4x4xf32> {moma.param = "layers.0.attention.wq.weight"},
                   %norm: tensor<4xf32> {moma.param = "norm.weight"},
                   %aux: tensor<2x4xf32> {moma.param = "layers.0.mod.aux_router.w1.weight"})
    -> (tensor<f32> {moma.result = "loss"}) {
  %zero = arith.constant dense<0.0> : tensor<f32>
  return %zero : tensor<f32>
}
