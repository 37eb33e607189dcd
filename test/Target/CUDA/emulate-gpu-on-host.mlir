// RUN: moma-opt %s -moma-emulate-gpu-on-host -canonicalize | FileCheck %s

// A block's work on the host: loops over the grid's blocks; inside, the
// loop spread over the threads and the thread-0 guard each run in a loop
// over the 128 threads (with the thread-dependent index arithmetic that
// feeds them), the uniform code once, in order; no barrier, no gpu op left.

// CHECK-LABEL: func.func @tile
// CHECK-NOT:     gpu.
// CHECK:         %[[BUF:.*]] = memref.alloc({{.*}}) {alignment = 64 : i64} : memref<?xf32>
// CHECK:         scf.for %[[B:.*]] = %c0 to %[[BLOCKS:.*]] step %c1 {
// CHECK:           %[[ROW0:.*]] = arith.muli %[[B]], %c128
// CHECK:           scf.for %[[T:.*]] = %c0 to %c128 step %c1 {
// CHECK:             %[[I0:.*]] = arith.addi %[[ROW0]], %[[T]]
// CHECK:             scf.for %{{.*}} = %[[I0]] to %{{.*}} step %c128
// CHECK:               memref.store
// CHECK:           scf.for %[[T2:.*]] = %c0 to %c128 step %c1 {
// CHECK:             %[[FIRST:.*]] = arith.cmpi eq, %[[T2]], %c0
// CHECK:             scf.if %[[FIRST]] {
// CHECK:               memref.store
// CHECK:         memref.copy %[[BUF]], %arg0
// CHECK:         memref.dealloc %[[BUF]]
// CHECK-NOT:     gpu.
func.func @tile(%out: memref<?xf32>, %n: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c128 = arith.constant 128 : index
  %one = arith.constant 1.0 : f32
  %buf = gpu.alloc (%n) : memref<?xf32>
  %blocks = arith.ceildivui %n, %c128 : index
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %blocks, %gy = %c1, %gz = %c1) threads(%tx, %ty, %tz) in (%sx = %c128, %sy = %c1, %sz = %c1) {
    %row0 = arith.muli %bx, %c128 : index
    %i0 = arith.addi %row0, %tx : index
    %end = arith.minui %n, %n : index
    scf.for %i = %i0 to %end step %c128 {
      memref.store %one, %buf[%i] : memref<?xf32>
    }
    gpu.barrier
    %first = arith.cmpi eq, %tx, %c0 : index
    scf.if %first {
      memref.store %one, %buf[%c0] : memref<?xf32>
    }
    gpu.barrier
    gpu.terminator
  }
  gpu.memcpy %out, %buf : memref<?xf32>, memref<?xf32>
  gpu.dealloc %buf : memref<?xf32>
  return
}
