// RUN: moma-opt %s -split-input-file -convert-moma-to-linalg | FileCheck %s

// train.precision "bf16" (MODEL_SPEC section 7): the module asks for bf16
// GEMM operands. A linear map rounds x and w to bf16 (arith.truncf, one
// element-wise kernel each) and contracts them into an f32 accumulator
// (linalg.contract widens its operands to the accumulator's type).
// CHECK-LABEL: func.func @linear
// CHECK: %[[X:.*]] = linalg.generic {{.*}} ins(%{{.*}} : tensor<?x64xf32>) outs(%{{.*}} : tensor<?x64xbf16>)
// CHECK: arith.truncf %{{.*}} : f32 to bf16
// CHECK: %[[W:.*]] = linalg.generic {{.*}} ins(%{{.*}} : tensor<32x64xf32>) outs(%{{.*}} : tensor<32x64xbf16>)
// CHECK: arith.truncf
// CHECK: linalg.contract indexing_maps = {{.*}} ins(%[[X]], %[[W]] : tensor<?x64xbf16>, tensor<32x64xbf16>) outs(%{{.*}} : tensor<?x32xf32>)
module attributes {moma.gemm_operand_type = bf16} {
func.func @linear(%x: tensor<?x64xf32>, %w: tensor<32x64xf32>) -> tensor<?x32xf32> {
  %y = moma.linear %x, %w : tensor<?x64xf32>, tensor<32x64xf32> -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}
}

// -----

// Router logits stay f32 in a bf16 model: no rounding, an f32 contraction.
// CHECK-LABEL: func.func @router
// CHECK-NOT: xbf16
// CHECK: ins(%{{.*}}, %{{.*}} : tensor<16x64xf32>, tensor<4x64xf32>) outs(%{{.*}} : tensor<16x4xf32>)
// CHECK-NOT: xbf16
module attributes {moma.gemm_operand_type = bf16} {
func.func @router(%x: tensor<16x64xf32>, %w: tensor<4x64xf32>) -> tensor<16x4xf32> {
  %s = moma.router %x, %w : tensor<16x64xf32>, tensor<4x64xf32> -> tensor<16x4xf32>
  return %s : tensor<16x4xf32>
}
}

// -----

// Attention: q, k and v rounded once, before the tiles; the scores of a
// tile from bf16 q and k, the masked softmax in f32, its normalized
// probabilities rounded for their product with v.
// CHECK-LABEL: func.func @attention
// CHECK-COUNT-3: arith.truncf %{{.*}} : f32 to bf16
// CHECK: scf.forall
// CHECK: ins(%{{.*}}, %{{.*}} : tensor<?x16xbf16>, tensor<?x16xbf16>) outs(%{{.*}} : tensor<?x?xf32>)
// CHECK: math.exp %{{.*}} : f32
// CHECK: math.log
// CHECK: math.exp %{{.*}} : f32
// CHECK: ins(%{{.*}} : tensor<?x?xf32>) outs(%{{.*}} : tensor<?x?xbf16>)
// CHECK: ins(%{{.*}}, %{{.*}} : tensor<?x?xbf16>, tensor<?x16xbf16>) outs(%{{.*}} : tensor<?x16xf32>)
module attributes {moma.gemm_operand_type = bf16} {
func.func @attention(%x: tensor<16x64xf32>, %p: tensor<16xi32>) -> tensor<16x64xf32> {
  %o = moma.attention %x, %x, %x, %p, %p heads = 4 scale = 0.25 : tensor<16x64xf32>, tensor<16xi32>
  return %o : tensor<16x64xf32>
}
}
