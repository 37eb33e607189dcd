// RUN: moma-opt %s -moma-map-tiles-to-gpu -canonicalize -split-input-file -verify-diagnostics | FileCheck %s

// A row tile of RMSNorm: one block per 32 rows (the grid is the tile count),
// 128 threads. The row sums over 128 columns are shared by a warp per row
// (4 warps, so 8 rounds of 4 rows): lane l sums columns l, l + 32, ...; the
// warp combines with gpu.subgroup_reduce and its first lane adds the total
// into the row's sum. The normalization spreads rows x columns over the
// threads (the column fastest). The tile's sum temporary is this block's
// 128-byte slice of one scratch buffer; a barrier follows each kernel.

// CHECK-LABEL: func.func @norm
// CHECK-DAG:     %[[C128:.*]] = arith.constant 128 : index
// CHECK-DAG:     %[[C32:.*]] = arith.constant 32 : index
// CHECK-DAG:     %[[C4:.*]] = arith.constant 4 : index
// CHECK-DAG:     %[[ZERO:.*]] = arith.constant 0.000000e+00 : f32
// CHECK:         %[[N:.*]] = memref.dim %arg0
// CHECK:         %[[TILES:.*]] = arith.ceildivui %[[N]], %[[C32]]
// CHECK:         %[[BYTES:.*]] = arith.muli %[[TILES]], %[[C128]]
// CHECK:         %[[SCRATCH:.*]] = memref.alloc(%[[BYTES]]) {alignment = 64 : i64} : memref<?xi8>
// CHECK:         gpu.launch blocks(%[[BX:.*]], %{{.*}}, %{{.*}}) in (%{{.*}} = %[[TILES]], %{{.*}} = %c1{{.*}}, %{{.*}} = %c1{{.*}}) threads(%[[TX:.*]], %{{.*}}, %{{.*}}) in (%{{.*}} = %[[C128]],
// CHECK:           %[[SLICE:.*]] = arith.muli %[[BX]], %[[C128]]
// CHECK:           %[[ROW0:.*]] = arith.muli %[[BX]], %[[C32]]
// CHECK:           %[[ROWS:.*]] = affine.min
// CHECK:           %[[SUM:.*]] = memref.view %[[SCRATCH]][%[[SLICE]]][%[[ROWS]]] : memref<?xi8> to memref<?xf32>
// CHECK:           scf.for %{{.*}} = %[[TX]] to %[[ROWS]] step %[[C128]] {
// CHECK:             memref.store %{{.*}}, %[[SUM]]
// CHECK:           gpu.barrier
// CHECK:           %[[LANE:.*]] = arith.remui %[[TX]], %[[C32]]
// CHECK:           %[[WARP:.*]] = arith.divui %[[TX]], %[[C32]]
// CHECK:           %[[ROUNDS:.*]] = arith.ceildivui %[[ROWS]], %[[C4]]
// CHECK:           scf.for %[[ROUND:.*]] = %c0{{.*}} to %[[ROUNDS]] step %c1
// CHECK:             %[[FIRST_ROW:.*]] = arith.muli %[[ROUND]], %[[C4]]
// CHECK:             %[[R:.*]] = arith.addi %[[FIRST_ROW]], %[[WARP]]
// CHECK:             %[[VALID:.*]] = arith.cmpi ult, %[[R]], %[[ROWS]]
// CHECK:             %[[END:.*]] = arith.select %[[VALID]], %[[C128]], %c0
// CHECK:             %[[PARTIAL:.*]] = scf.for %[[COL:.*]] = %[[LANE]] to %[[END]] step %[[C32]] iter_args(%[[ACC:.*]] = %[[ZERO]]) -> (f32) {
// CHECK:               memref.load %{{.*}}[%[[R]], %[[COL]]]
// CHECK:               arith.mulf
// CHECK:               arith.addf %[[ACC]]
// CHECK:             %[[TOTAL:.*]] = gpu.subgroup_reduce add %[[PARTIAL]] uniform : (f32) -> f32
// CHECK:             %[[LANE0:.*]] = arith.cmpi eq, %[[LANE]], %c0
// CHECK:             %[[LEADER:.*]] = arith.andi %[[VALID]], %[[LANE0]]
// CHECK:             scf.if %[[LEADER]] {
// CHECK:               %[[OLD:.*]] = memref.load %[[SUM]][%[[R]]]
// CHECK:               %[[NEW:.*]] = arith.addf %[[OLD]], %[[TOTAL]]
// CHECK:               memref.store %[[NEW]], %[[SUM]][%[[R]]]
// CHECK:           gpu.barrier
// CHECK:           %[[ELEMENTS:.*]] = arith.muli %[[ROWS]], %[[C128]]
// CHECK:           scf.for %[[E:.*]] = %[[TX]] to %[[ELEMENTS]] step %[[C128]] {
// CHECK:             %[[COL:.*]] = arith.remui %[[E]], %[[C128]]
// CHECK:             %[[ROW:.*]] = arith.divui %[[E]], %[[C128]]
// CHECK:             memref.store %{{.*}}[%[[ROW]], %[[COL]]]
// CHECK:           gpu.barrier
// CHECK-NEXT:      gpu.terminator
// CHECK:         memref.dealloc %[[SCRATCH]]
// CHECK-NOT:     scf.forall

#rows = affine_map<(d0)[s0] -> (-d0 + s0, 32)>
func.func @norm(%x: memref<?x128xf32>, %w: memref<128xf32>, %y: memref<?x128xf32>, %s: memref<f32>) {
  %c0 = arith.constant 0 : index
  %zero = arith.constant 0.0 : f32
  %n = memref.dim %x, %c0 : memref<?x128xf32>
  scf.forall (%i) = (0) to (%n) step (32) {
    %rows = affine.min #rows(%i)[%n]
    %xt = memref.subview %x[%i, 0] [%rows, 128] [1, 1] : memref<?x128xf32> to memref<?x128xf32, strided<[128, 1], offset: ?>>
    %yt = memref.subview %y[%i, 0] [%rows, 128] [1, 1] : memref<?x128xf32> to memref<?x128xf32, strided<[128, 1], offset: ?>>
    %sum = memref.alloc(%rows) {alignment = 64 : i64} : memref<?xf32>
    linalg.fill ins(%zero : f32) outs(%sum : memref<?xf32>)
    linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>, affine_map<(d0, d1) -> (d0)>], iterator_types = ["parallel", "reduction"]} ins(%xt : memref<?x128xf32, strided<[128, 1], offset: ?>>) outs(%sum : memref<?xf32>) {
    ^bb0(%in: f32, %out: f32):
      %sq = arith.mulf %in, %in : f32
      %acc = arith.addf %out, %sq : f32
      linalg.yield %acc : f32
    }
    linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>, affine_map<(d0, d1) -> (d0)>, affine_map<(d0, d1) -> (d1)>, affine_map<(d0, d1) -> (d0, d1)>], iterator_types = ["parallel", "parallel"]} ins(%xt, %sum, %w : memref<?x128xf32, strided<[128, 1], offset: ?>>, memref<?xf32>, memref<128xf32>) outs(%yt : memref<?x128xf32, strided<[128, 1], offset: ?>>) {
    ^bb0(%in: f32, %ss: f32, %g: f32, %out: f32):
      %r = math.rsqrt %ss : f32
      %a = arith.mulf %in, %r : f32
      %b = arith.mulf %a, %g : f32
      linalg.yield %b : f32
    }
    memref.dealloc %sum : memref<?xf32>
  }
  return
}

// -----

// A scalar result of a tile (a sum of 64 values into a rank-0 buffer) is
// shared by a warp (the other warps have no row: their partials are the
// neutral 0 and they write nothing); a scalar store runs on thread 0 only.

// CHECK-LABEL: func.func @scalar
// CHECK:         gpu.launch
// CHECK:           %[[LANE:.*]] = arith.remui %{{.*}}, %c32
// CHECK:           %[[PARTIAL:.*]] = scf.for %{{.*}} = %[[LANE]] to %{{.*}} step %c32 iter_args
// CHECK:           %[[TOTAL:.*]] = gpu.subgroup_reduce add %[[PARTIAL]]
// CHECK:           scf.if
// CHECK:             memref.load %{{.*}}[] : memref<f32, strided<[], offset: ?>>
// CHECK:             arith.addf %{{.*}}, %[[TOTAL]]
// CHECK:           gpu.barrier
// CHECK:           %[[FIRST:.*]] = arith.cmpi eq, %{{.*}}, %c0
// CHECK:           scf.if %[[FIRST]] {
// CHECK-NEXT:        memref.store
// CHECK:           gpu.barrier
func.func @scalar(%x: memref<4x64xf32>, %s: memref<4xf32>) {
  %one = arith.constant 1.0 : f32
  scf.forall (%i) in (4) {
    %row = memref.subview %x[%i, 0] [1, 64] [1, 1] : memref<4x64xf32> to memref<64xf32, strided<[1], offset: ?>>
    %out = memref.subview %s[%i] [1] [1] : memref<4xf32> to memref<f32, strided<[], offset: ?>>
    linalg.generic {indexing_maps = [affine_map<(d0) -> (d0)>, affine_map<(d0) -> ()>], iterator_types = ["reduction"]} ins(%row : memref<64xf32, strided<[1], offset: ?>>) outs(%out : memref<f32, strided<[], offset: ?>>) {
    ^bb0(%in: f32, %acc: f32):
      %a = arith.addf %acc, %in : f32
      linalg.yield %a : f32
    }
    memref.store %one, %x[%i, %i] : memref<4x64xf32>
  }
  return
}

// -----

// A temporary without a constant bound is sized by what the host knows
// before the tile (here %n): the scratch holds 4 blocks of n floats,
// rounded up to 64 bytes. One whose size the tile computes fails.

// CHECK-LABEL: func.func @host_sized
// CHECK:         %[[BYTES:.*]] = arith.muli %arg1, %c4
// CHECK:         %[[SLICE:.*]] = arith.ceildivui %[[BYTES]], %c64
// CHECK:         %[[ALIGNED:.*]] = arith.muli %[[SLICE]], %c64
// CHECK:         %[[TOTAL:.*]] = arith.muli %[[SLICE]], %c256
// CHECK:         %[[SCRATCH:.*]] = memref.alloc(%[[TOTAL]])
// CHECK:         gpu.launch blocks(%[[BX:[a-z0-9]+]], %{{.*}}, %{{.*}}) in
// CHECK:           %[[START:.*]] = arith.muli %[[BX]], %[[ALIGNED]]
// CHECK:           memref.view %[[SCRATCH]][%[[START]]][%arg1] : memref<?xi8> to memref<?xf32>
func.func @host_sized(%x: memref<?xf32>, %n: index) {
  scf.forall (%i) in (4) {
    %t = memref.alloc(%n) : memref<?xf32>
    memref.copy %x, %t : memref<?xf32> to memref<?xf32>
    memref.dealloc %t : memref<?xf32>
  }
  return
}

// -----

func.func @tile_sized(%x: memref<?xf32>) {
  %c0 = arith.constant 0 : index
  scf.forall (%i) in (4) {
    %v = memref.load %x[%i] : memref<?xf32>
    %n = arith.fptoui %v : f32 to i32
    %m = arith.index_cast %n : i32 to index
    // expected-error @+1 {{a temporary whose size has no constant upper bound and is computed in the tile}}
    %t = memref.alloc(%m) : memref<?xf32>
    memref.dealloc %t : memref<?xf32>
  }
  return
}

// -----

// A temporary allocated in a loop inside the tile (attention's score tiles,
// one per key block) takes one slot of the block's scratch, reused by every
// iteration: here at most 8 x 8 floats (its bound), 256 bytes per block.

// CHECK-LABEL: func.func @per_iteration
// CHECK:         %[[SCRATCH:.*]] = memref.alloc() {alignment = 64 : i64} : memref<1024xi8>
// CHECK:         gpu.launch
// CHECK:           scf.for
// CHECK:             memref.view %[[SCRATCH]][%{{.*}}][%{{.*}}] : memref<1024xi8> to memref<?x8xf32>
// CHECK-NOT:         memref.dealloc
// CHECK:           }
func.func @per_iteration(%x: memref<?x8xf32>, %n: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  scf.forall (%i) in (4) {
    scf.for %j = %c0 to %n step %c1 {
      %rows = affine.min affine_map<(d0) -> (8, d0)>(%j)
      %t = memref.alloc(%rows) : memref<?x8xf32>
      %s = memref.subview %x[0, 0] [%rows, 8] [1, 1] : memref<?x8xf32> to memref<?x8xf32, strided<[8, 1]>>
      memref.copy %s, %t : memref<?x8xf32, strided<[8, 1]>> to memref<?x8xf32>
      memref.dealloc %t : memref<?x8xf32>
    }
  }
  return
}

// -----

// One that the loop hands to its next iteration cannot share a slot.
func.func @outlives_iteration(%x: memref<8xf32>, %n: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  scf.forall (%i) in (4) {
    %r = scf.for %j = %c0 to %n step %c1 iter_args(%prev = %x) -> (memref<8xf32>) {
      // expected-error @+1 {{a temporary allocated in a loop inside a tile outlives its iteration}}
      %t = memref.alloc() : memref<8xf32>
      memref.copy %prev, %t : memref<8xf32> to memref<8xf32>
      scf.yield %t : memref<8xf32>
    }
  }
  return
}

// -----

// One long row per tile (4096 columns) is shared by the whole block: each
// warp combines its lanes, its first lane puts the warp's total in shared
// memory (a workgroup buffer of the launch, one slot per warp), and after
// a barrier thread 0 combines the 4 warps' totals (here a max) into the
// result; a barrier before the next round frees the slots (one round
// here: the loop folds away, and the barrier that ends the kernel with
// it).

// CHECK-LABEL: func.func @long_row
// CHECK:         gpu.launch {{.*}} workgroup(%[[SLOTS:.*]] : memref<4xf32, #gpu.address_space<workgroup>>)
// CHECK:           %[[PARTIAL:.*]] = scf.for %{{.*}} = %[[TX:[a-z0-9]+]] to %{{.*}} step %c128 iter_args(%{{.*}} = %cst{{.*}}) -> (f32)
// CHECK:             arith.maximumf
// CHECK:           %[[WARP_MAX:.*]] = gpu.subgroup_reduce maximumf %[[PARTIAL]] uniform
// CHECK:           %[[WARP:.*]] = arith.divui %[[TX]], %c32
// CHECK:           scf.if
// CHECK:             memref.store %[[WARP_MAX]], %[[SLOTS]][%[[WARP]]]
// CHECK:           gpu.barrier
// CHECK:           scf.if
// CHECK-DAG:         %[[W0:.*]] = memref.load %[[SLOTS]][%c0
// CHECK-DAG:         %[[W1:.*]] = memref.load %[[SLOTS]][%c1
// CHECK:             %[[M01:.*]] = arith.maximumf %[[W0]], %[[W1]]
// CHECK:             %[[M012:.*]] = arith.maximumf %[[M01]], %{{.*}}
// CHECK:             %[[MAX:.*]] = arith.maximumf %[[M012]], %{{.*}}
// CHECK:             %[[OLD:.*]] = memref.load %{{.*}}[] : memref<f32
// CHECK:             arith.maximumf %[[OLD]], %[[MAX]]
// CHECK:             memref.store
// CHECK:           gpu.barrier
// CHECK-NEXT:      gpu.terminator
func.func @long_row(%x: memref<8x4096xf32>, %m: memref<8xf32>) {
  scf.forall (%i) in (8) {
    %row = memref.subview %x[%i, 0] [1, 4096] [1, 1] : memref<8x4096xf32> to memref<4096xf32, strided<[1], offset: ?>>
    %out = memref.subview %m[%i] [1] [1] : memref<8xf32> to memref<f32, strided<[], offset: ?>>
    linalg.generic {indexing_maps = [affine_map<(d0) -> (d0)>, affine_map<(d0) -> ()>], iterator_types = ["reduction"]} ins(%row : memref<4096xf32, strided<[1], offset: ?>>) outs(%out : memref<f32, strided<[], offset: ?>>) {
    ^bb0(%in: f32, %acc: f32):
      %a = arith.maximumf %acc, %in : f32
      linalg.yield %a : f32
    }
  }
  return
}

// -----

// A reduction the lanes cannot share stays in the thread that owns the
// iteration: a sum down the columns (the reduction walks rows, so lanes
// would read 32 rows apart), and a sum of 4 values (fewer steps alone).

// CHECK-LABEL: func.func @unshared
// CHECK-NOT:     gpu.subgroup_reduce
// CHECK:         return
func.func @unshared(%x: memref<64x128xf32>, %cols: memref<2x128xf32>, %y: memref<64x4xf32>, %small: memref<2x64xf32>) {
  scf.forall (%i) in (2) {
    %c = memref.subview %cols[%i, 0] [1, 128] [1, 1] : memref<2x128xf32> to memref<128xf32, strided<[1], offset: ?>>
    linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d1, d0)>, affine_map<(d0, d1) -> (d0)>], iterator_types = ["parallel", "reduction"]} ins(%x : memref<64x128xf32>) outs(%c : memref<128xf32, strided<[1], offset: ?>>) {
    ^bb0(%in: f32, %acc: f32):
      %a = arith.addf %acc, %in : f32
      linalg.yield %a : f32
    }
    %s = memref.subview %small[%i, 0] [1, 64] [1, 1] : memref<2x64xf32> to memref<64xf32, strided<[1], offset: ?>>
    linalg.generic {indexing_maps = [affine_map<(d0, d1) -> (d0, d1)>, affine_map<(d0, d1) -> (d0)>], iterator_types = ["parallel", "reduction"]} ins(%y : memref<64x4xf32>) outs(%s : memref<64xf32, strided<[1], offset: ?>>) {
    ^bb0(%in: f32, %acc: f32):
      %a = arith.addf %acc, %in : f32
      linalg.yield %a : f32
    }
  }
  return
}
