// RUN: moma-opt %s -split-input-file -verify-diagnostics -moma-lower-linalg-to-cpu-loops | FileCheck %s

#x = affine_map<(d0, d1) -> (d0, d1)>

// Inside a tile loop a kernel becomes sequential loops over its tile (the
// threads already share the tiles); no nested parallel loop.
// CHECK-LABEL: func.func @kernel_in_tile
// CHECK: scf.forall
// CHECK-NOT: scf.parallel
// CHECK: scf.for
// CHECK: scf.for
// CHECK: arith.addf
// CHECK-NOT: linalg.generic
func.func @kernel_in_tile(%a: memref<64x8xf32>, %b: memref<64x8xf32>) {
  scf.forall (%i) = (0) to (64) step (16) {
    %sa = memref.subview %a[%i, 0] [16, 8] [1, 1] : memref<64x8xf32> to memref<16x8xf32, strided<[8, 1], offset: ?>>
    %sb = memref.subview %b[%i, 0] [16, 8] [1, 1] : memref<64x8xf32> to memref<16x8xf32, strided<[8, 1], offset: ?>>
    linalg.generic {indexing_maps = [#x, #x], iterator_types = ["parallel", "parallel"]}
        ins(%sa : memref<16x8xf32, strided<[8, 1], offset: ?>>) outs(%sb : memref<16x8xf32, strided<[8, 1], offset: ?>>) {
    ^bb0(%p: f32, %o: f32):
      %s = arith.addf %p, %p : f32
      linalg.yield %s : f32
    }
  }
  return
}

// -----

#x = affine_map<(d0, d1) -> (d0, d1)>

// A kernel at the top of a function is a parallel loop.
// CHECK-LABEL: func.func @kernel_at_top
// CHECK: scf.parallel
// CHECK: arith.mulf
// CHECK-NOT: linalg.generic
func.func @kernel_at_top(%a: memref<64x8xf32>, %b: memref<64x8xf32>) {
  linalg.generic {indexing_maps = [#x, #x], iterator_types = ["parallel", "parallel"]}
      ins(%a : memref<64x8xf32>) outs(%b : memref<64x8xf32>) {
  ^bb0(%p: f32, %o: f32):
    %s = arith.mulf %p, %p : f32
    linalg.yield %s : f32
  }
  return
}

// -----

// Kernels on tensors are an error: the pass runs after bufferization.
func.func @on_tensors(%a: tensor<4xf32>) -> tensor<4xf32> {
  %zero = arith.constant 0.0 : f32
  // expected-error @+1 {{expects a kernel on buffers}}
  %f = linalg.fill ins(%zero : f32) outs(%a : tensor<4xf32>) -> tensor<4xf32>
  return %f : tensor<4xf32>
}

// -----

#x = affine_map<(d0, d1) -> (d0, d1)>
#r = affine_map<(d0, d1) -> (d0)>

// A row sum inside a tile: the accumulator is loaded once, carried through
// the reduction loop in a register (iter_args) and stored once, and its add
// may be reassociated, so that LLVM vectorizes the sum. The reduction loop
// carries `llvm.loop.unroll.disable` for its latch: LLVM vectorizes it
// along the row instead of unrolling it whole and vectorizing across rows.
// CHECK: #[[UNROLL:.*]] = #llvm.loop_unroll<disable = true>
// CHECK: #[[ROLLED:.*]] = #llvm.loop_annotation<unroll = #[[UNROLL]]>
// CHECK-LABEL: func.func @row_sum_in_tile
// CHECK: scf.forall
// CHECK: scf.for %[[I:.*]] =
// CHECK: %[[INIT:.*]] = memref.load %{{.*}}[%[[I]]]
// CHECK: %[[SUM:.*]] = scf.for %[[J:.*]] = {{.*}} iter_args(%[[ACC:.*]] = %[[INIT]]) -> (f32)
// CHECK: %[[X:.*]] = memref.load %{{.*}}[%[[I]], %[[J]]]
// CHECK: %[[NEXT:.*]] = arith.addf %[[ACC]], %[[X]] fastmath<reassoc> : f32
// CHECK: scf.yield %[[NEXT]]
// CHECK-NEXT: } {loop_annotation = #[[ROLLED]]}
// CHECK: memref.store %[[SUM]], %{{.*}}[%[[I]]]
func.func @row_sum_in_tile(%a: memref<64x8xf32>, %s: memref<64xf32>) {
  scf.forall (%i) = (0) to (64) step (16) {
    %sa = memref.subview %a[%i, 0] [16, 8] [1, 1] : memref<64x8xf32> to memref<16x8xf32, strided<[8, 1], offset: ?>>
    %ss = memref.subview %s[%i] [16] [1] : memref<64xf32> to memref<16xf32, strided<[1], offset: ?>>
    linalg.generic {indexing_maps = [#x, #r], iterator_types = ["parallel", "reduction"]}
        ins(%sa : memref<16x8xf32, strided<[8, 1], offset: ?>>) outs(%ss : memref<16xf32, strided<[1], offset: ?>>) {
    ^bb0(%p: f32, %o: f32):
      %t = arith.addf %o, %p : f32
      linalg.yield %t : f32
    }
  }
  return
}
