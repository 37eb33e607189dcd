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

// A block's sum shared by its warps: gpu.subgroup_reduce goes through a
// buffer of one slot per thread (allocated around the launch): a thread
// loop stores each thread's partial, and the warp's first lane, in a later
// thread loop, reads its warp's 32 slots back and adds them. The launch's
// shared memory is a host buffer the blocks use in turn.

// CHECK-LABEL: func.func @block_sum
// CHECK-NOT:     gpu.
// CHECK:         %[[SLOTS:.*]] = memref.alloc() : memref<128xf32>
// CHECK:         %[[SHARED:.*]] = memref.alloc() : memref<4xf32>
// CHECK:         scf.for %[[T:.*]] = %c0 to %c128 step %c1 {
// CHECK:           %[[PARTIAL:.*]] = scf.for %{{.*}} = %[[T]] to %c4096 step %c128 iter_args
// CHECK:           memref.store %[[PARTIAL]], %[[SLOTS]][%[[T]]]
// CHECK:         scf.for %[[T2:.*]] = %c0 to %c128 step %c1 {
// CHECK:           %[[WARP:.*]] = arith.divui %[[T2]], %c32
// CHECK:           %[[BASE:.*]] = arith.muli %[[WARP]], %c32
// CHECK:           scf.if
// CHECK:             %[[FIRST:.*]] = memref.load %[[SLOTS]][%[[BASE]]]
// CHECK:             %[[SUM:.*]] = scf.for %[[L:.*]] = %c1 to %c32 step %c1 iter_args(%[[ACC:.*]] = %[[FIRST]])
// CHECK:               %[[SLOT:.*]] = arith.addi %[[BASE]], %[[L]]
// CHECK:               %[[V:.*]] = memref.load %[[SLOTS]][%[[SLOT]]]
// CHECK:               arith.addf %[[V]], %[[ACC]]
// CHECK:             memref.store %[[SUM]], %[[SHARED]]
// CHECK:         scf.for %[[T3:.*]] = %c0 to %c128 step %c1 {
// CHECK:           scf.if
// CHECK-COUNT-4:     memref.load %[[SHARED]]
// CHECK:             memref.store %{{.*}}, %arg1[]
// CHECK:         memref.dealloc %[[SHARED]]
// CHECK:         memref.dealloc %[[SLOTS]]
// CHECK-NOT:     gpu.
func.func @block_sum(%v: memref<4096xf32>, %total: memref<f32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c2 = arith.constant 2 : index
  %c3 = arith.constant 3 : index
  %c32 = arith.constant 32 : index
  %c128 = arith.constant 128 : index
  %c4096 = arith.constant 4096 : index
  %zero = arith.constant 0.0 : f32
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1) threads(%tx, %ty, %tz) in (%sx = %c128, %sy = %c1, %sz = %c1) workgroup(%shared : memref<4xf32, #gpu.address_space<workgroup>>) {
    %partial = scf.for %i = %tx to %c4096 step %c128 iter_args(%acc = %zero) -> (f32) {
      %x = memref.load %v[%i] : memref<4096xf32>
      %s = arith.addf %acc, %x : f32
      scf.yield %s : f32
    }
    %warp_sum = gpu.subgroup_reduce add %partial uniform : (f32) -> f32
    %warp = arith.divui %tx, %c32 : index
    %lane = arith.remui %tx, %c32 : index
    %first_lane = arith.cmpi eq, %lane, %c0 : index
    scf.if %first_lane {
      memref.store %warp_sum, %shared[%warp] : memref<4xf32, #gpu.address_space<workgroup>>
    }
    gpu.barrier
    %first = arith.cmpi eq, %tx, %c0 : index
    scf.if %first {
      %w0 = memref.load %shared[%c0] : memref<4xf32, #gpu.address_space<workgroup>>
      %w1 = memref.load %shared[%c1] : memref<4xf32, #gpu.address_space<workgroup>>
      %w2 = memref.load %shared[%c2] : memref<4xf32, #gpu.address_space<workgroup>>
      %w3 = memref.load %shared[%c3] : memref<4xf32, #gpu.address_space<workgroup>>
      %a = arith.addf %w0, %w1 : f32
      %b = arith.addf %a, %w2 : f32
      %c = arith.addf %b, %w3 : f32
      %old = memref.load %total[] : memref<f32>
      %new = arith.addf %old, %c : f32
      memref.store %new, %total[] : memref<f32>
    }
    gpu.barrier
    gpu.terminator
  }
  return
}
