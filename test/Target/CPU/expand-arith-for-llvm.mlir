// RUN: moma-opt %s -moma-expand-arith-for-llvm | FileCheck %s

// bf16 conversions become integer bit operations and index ceil/floor
// divisions plain ones; the floating-point maximum and minimum stay, for
// LLVM's llvm.maximum/llvm.minimum, whose reductions vectorize.
// CHECK-LABEL: func.func @expand(
// CHECK-NOT: arith.truncf
// CHECK-NOT: arith.extf
// CHECK-NOT: arith.ceildivsi
// CHECK-NOT: arith.floordivsi
// CHECK-DAG: arith.bitcast %{{.*}} : f32 to i32
// CHECK-DAG: arith.shli %{{.*}} : i32
// CHECK-DAG: arith.divsi %{{.*}} : index
// CHECK-DAG: arith.maximumf %{{.*}}, %{{.*}} : f32
// CHECK-DAG: arith.minimumf %{{.*}}, %{{.*}} : f32
// CHECK-DAG: arith.maxnumf %{{.*}}, %{{.*}} : f32
func.func @expand(%x: f32, %h: bf16, %a: index, %b: index)
    -> (bf16, f32, index, index, f32, f32, f32) {
  %t = arith.truncf %x : f32 to bf16
  %e = arith.extf %h : bf16 to f32
  %c = arith.ceildivsi %a, %b : index
  %f = arith.floordivsi %a, %b : index
  %max = arith.maximumf %x, %e : f32
  %min = arith.minimumf %x, %e : f32
  %num = arith.maxnumf %x, %e : f32
  return %t, %e, %c, %f, %max, %min, %num : bf16, f32, index, index, f32, f32, f32
}
