// RUN: moma-opt %s -moma-map-host-code-to-gpu -canonicalize | FileCheck %s

// What runs between the tiles, as device work:
// - the token count is scalar code: one single-thread launch, and since a
//   buffer's size needs it on the host, one read (momart_cuda_read_to_host);
// - the zero fill outside tiles is a launch over the grid (one thread per
//   element, 128 per block), which gets the count as an argument;
// - the mean a later kernel scales by is computed on one thread and loaded
//   by that kernel from the device: no read;
// - the constant table is a device buffer filled by a kernel; the copy
//   between whole buffers is a gpu.memcpy; allocations are gpu.alloc.

// CHECK-LABEL: func.func @step
// CHECK:         %[[COUNT_BUF:.*]] = gpu.alloc () : memref<1xi64>
// CHECK:         gpu.launch blocks({{.*}}) in ({{.*}} = %c1{{.*}}, {{.*}} = %c1{{.*}}, {{.*}} = %c1{{.*}}) threads({{.*}}) in ({{.*}} = %c1{{.*}}, {{.*}} = %c1{{.*}}, {{.*}} = %c1{{.*}}) {
// CHECK:           %[[COUNT:.*]] = scf.for
// CHECK:             memref.load %arg0
// CHECK:           %[[BITS:.*]] = arith.index_cast %[[COUNT]] : index to i64
// CHECK:           memref.store %[[BITS]], %[[COUNT_BUF]]
// CHECK:         %[[HOST:.*]] = memref.alloca() : memref<1xi64>
// CHECK:         call @momart_cuda_read_to_host({{.*}}, %c8_i64)
// CHECK:         %[[READ:.*]] = memref.load %[[HOST]]
// CHECK:         %[[N:.*]] = arith.index_cast %[[READ]] : i64 to index
// CHECK:         %[[ROWS:.*]] = gpu.alloc (%[[N]]) : memref<?x8xf32>
// CHECK:         %[[ELEMENTS:.*]] = arith.muli %[[N]], %c8
// CHECK:         %[[BLOCKS:.*]] = arith.ceildivui %[[ELEMENTS]], %c128
// CHECK:         %[[GRID:.*]] = arith.maxui %[[BLOCKS]], %c1
// CHECK:         gpu.launch blocks(%[[BX:.*]], %{{.*}}, %{{.*}}) in (%[[GX:.*]] = %[[GRID]], {{.*}} threads(%[[TX:.*]], %{{.*}}, %{{.*}}) in ({{.*}} = %c128,
// CHECK:           %[[FIRST:.*]] = arith.muli %[[BX]], %c128
// CHECK:           %[[TID:.*]] = arith.addi %[[FIRST]], %[[TX]]
// CHECK:           %[[STRIDE:.*]] = arith.muli %[[GX]], %c128
// CHECK:           scf.for %{{.*}} = %[[TID]] to %{{.*}} step %[[STRIDE]]
// CHECK:             memref.store %{{.*}}, %[[ROWS]]
// CHECK:         %[[MEAN_BUF:.*]] = gpu.alloc () : memref<1xi64>
// CHECK:         gpu.launch
// CHECK:           memref.load %arg2[]
// CHECK:           arith.divf
// CHECK:           memref.store %{{.*}}, %[[MEAN_BUF]]
// CHECK:         gpu.launch
// CHECK:           memref.store %cst
// CHECK:         gpu.launch
// CHECK:           %[[MEAN_BITS:.*]] = memref.load %[[MEAN_BUF]]
// CHECK:           arith.mulf
// CHECK:         gpu.memcpy %arg3
// CHECK-COUNT-5: gpu.dealloc
// CHECK-NOT:     momart_cuda_read_to_host
// CHECK:         return

memref.global "private" constant @zeros : memref<4xf32> = dense<0.0>

func.func @step(%tokens: memref<16xi32>, %x: memref<16x8xf32>, %loss: memref<f32>, %out: memref<4xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c16 = arith.constant 16 : index
  %c0_i32 = arith.constant 0 : i32
  %c8_i32 = arith.constant 8 : i32
  // A token count (scalar code): it sizes a buffer, so the host reads it.
  %count = scf.for %i = %c0 to %c16 step %c1 iter_args(%n = %c0) -> (index) {
    %t = memref.load %tokens[%i] : memref<16xi32>
    %small = arith.cmpi slt, %t, %c8_i32 : i32
    %one = arith.select %small, %c1, %c0 : index
    %next = arith.addi %n, %one : index
    scf.yield %next : index
  }
  %rows = memref.alloc(%count) : memref<?x8xf32>
  // A kernel outside tiles: a launch over the grid.
  %zero = arith.constant 0.0 : f32
  linalg.fill ins(%zero : f32) outs(%rows : memref<?x8xf32>)
  // A scalar the device keeps: a mean that a later kernel scales by.
  %sum = memref.load %loss[] : memref<f32>
  %scale = arith.divf %sum, %zero : f32
  %tmp = memref.alloc() : memref<4xf32>
  %table = memref.get_global @zeros : memref<4xf32>
  linalg.generic {indexing_maps = [affine_map<(d0) -> (d0)>, affine_map<(d0) -> (d0)>], iterator_types = ["parallel"]} ins(%table : memref<4xf32>) outs(%tmp : memref<4xf32>) {
  ^bb0(%in: f32, %o: f32):
    %v = arith.mulf %in, %scale : f32
    linalg.yield %v : f32
  }
  memref.copy %tmp, %out : memref<4xf32> to memref<4xf32>
  memref.dealloc %tmp : memref<4xf32>
  memref.dealloc %rows : memref<?x8xf32>
  return
}

// An argument the caller passes in host memory (moma.host_scalar: batch_rows)
// is read by the host itself: no launch and no read back, and the buffer it
// sizes is allocated right away.
// CHECK-LABEL: func.func @host_scalar
// CHECK-NOT:     gpu.launch
// CHECK-NOT:     momart_cuda_read_to_host
// CHECK:         %[[ROWS:.*]] = memref.load %arg0[] : memref<i32>
// CHECK:         %[[N:.*]] = arith.index_cast %[[ROWS]] : i32 to index
// CHECK:         gpu.alloc (%[[N]]) : memref<?x8xf32>
// CHECK:         gpu.launch
// CHECK-NOT:     momart_cuda_read_to_host
// CHECK:         return
func.func @host_scalar(%rows: memref<i32> {moma.host_scalar}) {
  %r = memref.load %rows[] : memref<i32>
  %n = arith.index_cast %r : i32 to index
  %buffer = memref.alloc(%n) : memref<?x8xf32>
  %zero = arith.constant 0.0 : f32
  linalg.fill ins(%zero : f32) outs(%buffer : memref<?x8xf32>)
  memref.dealloc %buffer : memref<?x8xf32>
  return
}


// Reductions outside tiles. The sums over 32 columns of each of the N x 4
// rows are shared by a warp per row: the grid is sized to 32 threads per
// row (N x 128 threads), every thread takes the same rounds over the rows,
// and each warp combines with gpu.subgroup_reduce. The sum of a whole
// 65536-element buffer into a scalar runs on one block: each warp
// combines its lanes, the warps meet in shared memory, thread 0 adds.

// CHECK-LABEL: func.func @sums
// CHECK:         %[[N:.*]] = memref.dim %arg0, %c0
// CHECK:         %[[THREADS:.*]] = arith.muli %[[N]], %c128
// CHECK:         %[[BLOCKS:.*]] = arith.ceildivui %[[THREADS]], %c128
// CHECK:         %[[GRID:.*]] = arith.maxui %[[BLOCKS]], %c1
// CHECK:         gpu.launch blocks(%[[BX:.*]], %{{.*}}, %{{.*}}) in (%[[GX:.*]] = %[[GRID]], {{.*}} threads(%[[TX:.*]], %{{.*}}, %{{.*}}) in ({{.*}} = %c128,
// CHECK:           %[[TID:.*]] = arith.addi %{{.*}}, %[[TX]]
// CHECK:           %[[LANE:.*]] = arith.remui %[[TID]], %c32
// CHECK:           scf.for
// CHECK:             %[[PARTIAL:.*]] = scf.for %{{.*}} = %[[LANE]] to %{{.*}} step %c32 iter_args
// CHECK:             gpu.subgroup_reduce add %[[PARTIAL]] uniform : (f32) -> f32
// CHECK-NOT:       gpu.barrier
// CHECK:           gpu.terminator
// CHECK:         gpu.launch blocks({{.*}}) in ({{.*}} = %c1{{.*}}, {{.*}} = %c1{{.*}}, {{.*}} = %c1{{.*}}) threads(%[[T:.*]], %{{.*}}, %{{.*}}) in ({{.*}} = %c128, {{.*}}) workgroup(%[[SLOTS:.*]] : memref<4xf32, #gpu.address_space<workgroup>>)
// CHECK:           %[[PART:.*]] = scf.for %{{.*}} = %[[T]] to %c65536 step %c128
// CHECK:           %[[WARP_SUM:.*]] = gpu.subgroup_reduce add %[[PART]]
// CHECK:           memref.store %[[WARP_SUM]], %[[SLOTS]]
// CHECK:           gpu.barrier
// CHECK:           %[[FIRST:.*]] = arith.cmpi eq, %[[T]], %c0
// CHECK:           scf.if %[[FIRST]] {
// CHECK-COUNT-4:     memref.load %[[SLOTS]]
// CHECK:             memref.store %{{.*}}, %arg3[]
func.func @sums(%x: memref<?x4x32xf32>, %s: memref<?x4xf32>, %v: memref<65536xf32>, %total: memref<f32>) {
  linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d1, d2)>, affine_map<(d0, d1, d2) -> (d0, d1)>], iterator_types = ["parallel", "parallel", "reduction"]} ins(%x : memref<?x4x32xf32>) outs(%s : memref<?x4xf32>) {
  ^bb0(%a: f32, %out: f32):
    %m = arith.mulf %a, %a : f32
    %r = arith.addf %out, %m : f32
    linalg.yield %r : f32
  }
  linalg.generic {indexing_maps = [affine_map<(d0) -> (d0)>, affine_map<(d0) -> ()>], iterator_types = ["reduction"]} ins(%v : memref<65536xf32>) outs(%total : memref<f32>) {
  ^bb0(%a: f32, %out: f32):
    %r = arith.addf %out, %a : f32
    linalg.yield %r : f32
  }
  return
}
