// RUN: moma-opt %s -moma-clone-shared-fills | FileCheck %s

#mk = affine_map<(d0, d1, d2) -> (d0, d2)>
#nk = affine_map<(d0, d1, d2) -> (d1, d2)>
#mn = affine_map<(d0, d1, d2) -> (d0, d1)>

// Two GEMMs accumulate into one zero tensor (as CSE leaves them): each gets
// a fill of its own, right in front of it, so bufferization copies nothing.
// CHECK-LABEL: func.func @two_gemms_one_fill
// CHECK-NOT: linalg.fill
// CHECK: %[[E1:.*]] = tensor.empty() : tensor<8x4xf32>
// CHECK: %[[Z1:.*]] = linalg.fill ins(%{{.*}} : f32) outs(%[[E1]] : tensor<8x4xf32>)
// CHECK: linalg.generic {{.*}} outs(%[[Z1]] : tensor<8x4xf32>)
// CHECK: %[[E2:.*]] = tensor.empty() : tensor<8x4xf32>
// CHECK: %[[Z2:.*]] = linalg.fill ins(%{{.*}} : f32) outs(%[[E2]] : tensor<8x4xf32>)
// CHECK: linalg.generic {{.*}} outs(%[[Z2]] : tensor<8x4xf32>)
func.func @two_gemms_one_fill(%x: tensor<8x16xf32>, %w1: tensor<4x16xf32>, %w2: tensor<4x16xf32>) -> (tensor<8x4xf32>, tensor<8x4xf32>) {
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<8x4xf32>
  %z = linalg.fill ins(%zero : f32) outs(%e : tensor<8x4xf32>) -> tensor<8x4xf32>
  %a = linalg.generic {indexing_maps = [#mk, #nk, #mn], iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%x, %w1 : tensor<8x16xf32>, tensor<4x16xf32>) outs(%z : tensor<8x4xf32>) {
  ^bb0(%p: f32, %q: f32, %o: f32):
    %m = arith.mulf %p, %q : f32
    %s = arith.addf %o, %m : f32
    linalg.yield %s : f32
  } -> tensor<8x4xf32>
  %b = linalg.generic {indexing_maps = [#mk, #nk, #mn], iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%x, %w2 : tensor<8x16xf32>, tensor<4x16xf32>) outs(%z : tensor<8x4xf32>) {
  ^bb0(%p: f32, %q: f32, %o: f32):
    %m = arith.mulf %p, %q : f32
    %s = arith.addf %o, %m : f32
    linalg.yield %s : f32
  } -> tensor<8x4xf32>
  return %a, %b : tensor<8x4xf32>, tensor<8x4xf32>
}
