// RUN: moma-opt %s -convert-moma-to-linalg="gemm-operands-in-f32" | FileCheck %s
// RUN: moma-opt %s -convert-moma-to-linalg | FileCheck %s --check-prefix=BF16

// gemm-operands-in-f32 (momac --cpu-bf16-gemm=f32): a bf16 model's GEMM
// operands are rounded to bf16 (arith.truncf) and widened back at once
// (arith.extf), so they stay f32 tensors and the contraction is an f32 one,
// which the CPU target turns into f32 GEMM calls. The products are those of
// the bf16 values either way. The module is marked for the patterns.
// CHECK: module attributes {moma.gemm_operand_type = bf16, moma.gemm_operands_in_f32}
// CHECK-LABEL: func.func @linear
// CHECK-NOT: xbf16>
// CHECK: %[[X:.*]] = linalg.generic {{.*}} ins(%{{.*}} : tensor<?x64xf32>) outs(%{{.*}} : tensor<?x64xf32>)
// CHECK: %[[XR:.*]] = arith.truncf %{{.*}} : f32 to bf16
// CHECK: arith.extf %[[XR]] : bf16 to f32
// CHECK: %[[W:.*]] = linalg.generic {{.*}} ins(%{{.*}} : tensor<32x64xf32>) outs(%{{.*}} : tensor<32x64xf32>)
// CHECK: arith.truncf
// CHECK: arith.extf
// CHECK: linalg.contract indexing_maps = {{.*}} ins(%[[X]], %[[W]] : tensor<?x64xf32>, tensor<32x64xf32>) outs(%{{.*}} : tensor<?x32xf32>)
// CHECK-NOT: xbf16>

// Without the option the rounded operands are bf16 tensors.
// BF16-NOT: moma.gemm_operands_in_f32
// BF16: linalg.contract {{.*}} ins(%{{.*}}, %{{.*}} : tensor<?x64xbf16>, tensor<32x64xbf16>)
module attributes {moma.gemm_operand_type = bf16} {
func.func @linear(%x: tensor<?x64xf32>, %w: tensor<32x64xf32>) -> tensor<?x32xf32> {
  %y = moma.linear %x, %w : tensor<?x64xf32>, tensor<32x64xf32> -> tensor<?x32xf32>
  return %y : tensor<?x32xf32>
}
}
