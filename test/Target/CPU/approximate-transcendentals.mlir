// RUN: moma-opt %s -moma-approximate-transcendentals | FileCheck %s

// f32 exp and log become arithmetic (no call left for LLVM to keep scalar);
// f64 and other functions stay for libm.
// CHECK-LABEL: func.func @softmax_terms
// CHECK-NOT: math.exp
// CHECK-NOT: math.log
// CHECK: math.fma
// CHECK: math.exp %{{.*}} : f64
// CHECK: math.rsqrt %{{.*}} : f32
func.func @softmax_terms(%x: f32, %y: f64) -> (f32, f32, f64, f32) {
  %e = math.exp %x : f32
  %l = math.log %x : f32
  %d = math.exp %y : f64
  %r = math.rsqrt %x : f32
  return %e, %l, %d, %r : f32, f32, f64, f32
}
