// RUN: moma-opt %s -moma-synthesize-grad="forward=forward_aux grad=grad_aux loss=aux_loss report-all=true" | FileCheck %s --check-prefix=AUX

// The auxiliary routers' objective (MODEL_SPEC section 6), with loss=aux_loss
// and report-all: the gradient reaches w1 and w2 through aux_router_loss_grad
// and aux_router_grad, never the frozen input; every result is returned.
// AUX-LABEL: func.func @grad_aux
// AUX-SAME: -> (tensor<f32> {moma.result = "aux_loss"}, tensor<4xf32> {moma.result = "confusion.r"}, tensor<8x16xf32> {moma.result = "grad.w1"}, tensor<1x8xf32> {moma.result = "grad.w2"})
// AUX: %[[P:.*]] = moma.aux_router %[[X:[^,]*]], %[[W1:[^,]*]], %[[W2:[^ ]*]] :
// AUX: %[[DP:.*]] = moma.aux_router_loss_grad %[[P]], %{{.*}}, %{{.*}} :
// AUX: %[[DW1:.*]], %[[DW2:.*]] = moma.aux_router_grad %[[X]], %[[W1]], %[[W2]], %[[P]], %[[DP]] :
// AUX: return %{{.*}}, %{{.*}}, %[[DW1]], %[[DW2]]
func.func @forward_aux(%x: tensor<6x16xf32> {moma.param = "x", moma.no_grad},
                       %w1: tensor<8x16xf32> {moma.param = "w1"},
                       %w2: tensor<1x8xf32> {moma.param = "w2"},
                       %sel: tensor<2xi32> {moma.param = "sel"})
    -> (tensor<f32> {moma.result = "aux_loss"}, tensor<4xf32> {moma.result = "confusion.r"}) {
  %p = moma.aux_router %x, %w1, %w2 : tensor<6x16xf32>, tensor<8x16xf32>, tensor<1x8xf32> -> tensor<6x1xf32>
  %l = moma.aux_router_loss %p, %sel : tensor<6x1xf32>, tensor<2xi32> -> tensor<f32>
  %c = moma.aux_router_confusion %p, %sel : tensor<6x1xf32>, tensor<2xi32> -> tensor<4xf32>
  return %l, %c : tensor<f32>, tensor<4xf32>
}
