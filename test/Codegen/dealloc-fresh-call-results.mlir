// RUN: moma-opt %s -split-input-file -moma-dealloc-fresh-call-results | FileCheck %s

// A layer function returns two fresh buffers (allocated in it, distinct;
// one through a view). The caller frees them and the buffer it passed in,
// all in one deallocation: each fresh result gets a deallocation of its
// own, with its own condition; what is left stays together.
func.func private @layer(%x: memref<4xf32>) -> (memref<4xf32>, memref<2x2xf32>) {
  %a = memref.alloc() : memref<4xf32>
  %b = memref.alloc() : memref<4xf32>
  memref.copy %x, %a : memref<4xf32> to memref<4xf32>
  %e = memref.expand_shape %b [[0, 1]] output_shape [2, 2] : memref<4xf32> into memref<2x2xf32>
  return %a, %e : memref<4xf32>, memref<2x2xf32>
}

// CHECK-LABEL: func.func @caller(
// CHECK-SAME: %[[C:.*]]: i1
// CHECK: %[[X:.*]] = memref.alloc()
// CHECK: %[[R:.*]]:2 = call @layer(%[[X]])
// CHECK: %[[BASE:[^,]*]], %{{.*}} = memref.extract_strided_metadata %[[R]]#1
// CHECK: %[[TRUE:.*]] = arith.constant true
// CHECK-NEXT: bufferization.dealloc (%[[R]]#0 : memref<4xf32>) if (%[[C]])
// CHECK-NEXT: bufferization.dealloc (%[[BASE]] : memref<f32>) if (%[[TRUE]])
// CHECK-NEXT: bufferization.dealloc (%[[X]] : memref<4xf32>) if (%[[TRUE]])
// CHECK-NEXT: return
func.func @caller(%c: i1) {
  %x = memref.alloc() : memref<4xf32>
  %r:2 = call @layer(%x) : (memref<4xf32>) -> (memref<4xf32>, memref<2x2xf32>)
  %base, %offset, %sizes:2, %strides:2 = memref.extract_strided_metadata %r#1 : memref<2x2xf32> -> memref<f32>, index, index, index, index, index
  %true = arith.constant true
  bufferization.dealloc (%x, %r#0, %base : memref<4xf32>, memref<4xf32>, memref<f32>) if (%true, %c, %true)
  return
}

// -----

// Not fresh: a function that returns one buffer twice, or its argument.
// Their results may be the same buffer as another of the list, so the
// deallocation keeps its run-time check.
func.func private @twice() -> (memref<4xf32>, memref<4xf32>) {
  %a = memref.alloc() : memref<4xf32>
  return %a, %a : memref<4xf32>, memref<4xf32>
}
func.func private @passthrough(%x: memref<4xf32>) -> memref<4xf32> {
  return %x : memref<4xf32>
}

// CHECK-LABEL: func.func @not_fresh(
// CHECK: bufferization.dealloc (%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : memref<4xf32>, memref<4xf32>, memref<4xf32>, memref<4xf32>)
// CHECK-NOT: bufferization.dealloc
func.func @not_fresh() {
  %r:2 = call @twice() : () -> (memref<4xf32>, memref<4xf32>)
  %x = memref.alloc() : memref<4xf32>
  %y = call @passthrough(%x) : (memref<4xf32>) -> memref<4xf32>
  %true = arith.constant true
  bufferization.dealloc (%r#0, %r#1, %x, %y : memref<4xf32>, memref<4xf32>, memref<4xf32>, memref<4xf32>) if (%true, %true, %true, %true)
  return
}

// -----

// A fresh result passed to a function that may return it (an external
// one) may be held by that call's result: both stay together. Passed to a
// function that returns a fresh buffer, it is not: both are split.
func.func private @fresh() -> memref<4xf32> {
  %a = memref.alloc() : memref<4xf32>
  return %a : memref<4xf32>
}
func.func private @unknown(memref<4xf32>) -> memref<4xf32>
func.func private @consume(%x: memref<4xf32>) -> memref<4xf32> {
  %a = memref.alloc() : memref<4xf32>
  memref.copy %x, %a : memref<4xf32> to memref<4xf32>
  return %a : memref<4xf32>
}

// CHECK-LABEL: func.func @held(
// CHECK: %[[F:.*]] = call @fresh()
// CHECK: %[[G:.*]] = call @unknown(%[[F]])
// CHECK: bufferization.dealloc (%[[F]], %[[G]] : memref<4xf32>, memref<4xf32>)
// CHECK-NOT: bufferization.dealloc
func.func @held() {
  %f = call @fresh() : () -> memref<4xf32>
  %g = call @unknown(%f) : (memref<4xf32>) -> memref<4xf32>
  %true = arith.constant true
  bufferization.dealloc (%f, %g : memref<4xf32>, memref<4xf32>) if (%true, %true)
  return
}

// CHECK-LABEL: func.func @consumed(
// CHECK: %[[F:.*]] = call @fresh()
// CHECK: %[[G:.*]] = call @consume(%[[F]])
// CHECK: bufferization.dealloc (%[[F]] : memref<4xf32>)
// CHECK-NEXT: bufferization.dealloc (%[[G]] : memref<4xf32>)
func.func @consumed() {
  %f = call @fresh() : () -> memref<4xf32>
  %g = call @consume(%f) : (memref<4xf32>) -> memref<4xf32>
  %true = arith.constant true
  bufferization.dealloc (%f, %g : memref<4xf32>, memref<4xf32>) if (%true, %true)
  return
}

// -----

// The retained buffers' ownership is or-ed over the deallocations that
// replace the one.
func.func private @fresh() -> memref<4xf32> {
  %a = memref.alloc() : memref<4xf32>
  return %a : memref<4xf32>
}

// CHECK-LABEL: func.func @retained(
// CHECK-SAME: %[[KEEP:.*]]: memref<4xf32>
// CHECK: %[[F:.*]] = call @fresh()
// CHECK: %[[X:.*]] = memref.alloc()
// CHECK: %[[A:.*]] = bufferization.dealloc (%[[F]] : memref<4xf32>) if (%{{.*}}) retain (%[[KEEP]] : memref<4xf32>)
// CHECK-NEXT: %[[B:.*]] = bufferization.dealloc (%[[X]] : memref<4xf32>) if (%{{.*}}) retain (%[[KEEP]] : memref<4xf32>)
// CHECK-NEXT: %[[OWNED:.*]] = arith.ori %[[A]], %[[B]]
// CHECK-NEXT: return %[[OWNED]]
func.func @retained(%keep: memref<4xf32>) -> i1 {
  %f = call @fresh() : () -> memref<4xf32>
  %x = memref.alloc() : memref<4xf32>
  %true = arith.constant true
  %owned = bufferization.dealloc (%f, %x : memref<4xf32>, memref<4xf32>) if (%true, %true) retain (%keep : memref<4xf32>)
  return %owned : i1
}
