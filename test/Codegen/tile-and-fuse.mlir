// RUN: moma-opt %s -split-input-file -moma-tile-and-fuse=tile-rows=16 -cse | FileCheck %s

#x = affine_map<(d0, d1) -> (d0, d1)>
#r = affine_map<(d0, d1) -> (d0)>
#v = affine_map<(d0) -> (d0)>

// log-sum-exp of each row: the max, the sum of exps and the log become one
// loop over blocks of 16 rows, with both fills inside it; nothing is left
// outside but the loop.
// CHECK-LABEL: func.func @logsumexp
// CHECK-NOT: linalg.
// CHECK: %[[LOOP:.*]] = scf.forall (%[[ROW:.*]]) = (0) to (64) step (16) shared_outs(%[[OUT:.*]] = %{{.*}}) -> (tensor<64xf32>)
// CHECK: %[[X:.*]] = tensor.extract_slice %{{.*}}[%[[ROW]], 0] [16, 512] [1, 1]
// CHECK: linalg.fill
// CHECK: %[[MAX:.*]] = linalg.generic {{.*}} ins(%[[X]] : tensor<16x512xf32>)
// CHECK: arith.maximumf
// CHECK: linalg.fill
// CHECK: %[[SUM:.*]] = linalg.generic {{.*}} ins(%[[X]], %[[MAX]] : tensor<16x512xf32>, tensor<16xf32>)
// CHECK: math.exp
// CHECK: %[[LSE:.*]] = linalg.generic {{.*}} ins(%[[MAX]], %[[SUM]] : tensor<16xf32>, tensor<16xf32>)
// CHECK: math.log
// CHECK: tensor.parallel_insert_slice %[[LSE]] into %[[OUT]][%[[ROW]]] [16] [1]
// CHECK-NOT: linalg.
// CHECK: return %[[LOOP]]
func.func @logsumexp(%x: tensor<64x512xf32>) -> tensor<64xf32> {
  %ninf = arith.constant 0xFF800000 : f32
  %zero = arith.constant 0.0 : f32
  %e0 = tensor.empty() : tensor<64xf32>
  %f0 = linalg.fill ins(%ninf : f32) outs(%e0 : tensor<64xf32>) -> tensor<64xf32>
  %max = linalg.generic {indexing_maps = [#x, #r], iterator_types = ["parallel", "reduction"]}
      ins(%x : tensor<64x512xf32>) outs(%f0 : tensor<64xf32>) {
  ^bb0(%a: f32, %o: f32):
    %m = arith.maximumf %a, %o : f32
    linalg.yield %m : f32
  } -> tensor<64xf32>
  %e1 = tensor.empty() : tensor<64xf32>
  %f1 = linalg.fill ins(%zero : f32) outs(%e1 : tensor<64xf32>) -> tensor<64xf32>
  %sum = linalg.generic {indexing_maps = [#x, #r, #r], iterator_types = ["parallel", "reduction"]}
      ins(%x, %max : tensor<64x512xf32>, tensor<64xf32>) outs(%f1 : tensor<64xf32>) {
  ^bb0(%a: f32, %m: f32, %o: f32):
    %d = arith.subf %a, %m : f32
    %x2 = math.exp %d : f32
    %s = arith.addf %o, %x2 : f32
    linalg.yield %s : f32
  } -> tensor<64xf32>
  %e2 = tensor.empty() : tensor<64xf32>
  %lse = linalg.generic {indexing_maps = [#v, #v, #v], iterator_types = ["parallel"]}
      ins(%max, %sum : tensor<64xf32>, tensor<64xf32>) outs(%e2 : tensor<64xf32>) {
  ^bb0(%m: f32, %s: f32, %o: f32):
    %l = math.log %s : f32
    %r = arith.addf %m, %l : f32
    linalg.yield %r : f32
  } -> tensor<64xf32>
  return %lse : tensor<64xf32>
}

// -----

#x = affine_map<(d0, d1) -> (d0, d1)>
#mk = affine_map<(d0, d1, d2) -> (d0, d2)>
#nk = affine_map<(d0, d1, d2) -> (d1, d2)>
#mn = affine_map<(d0, d1, d2) -> (d0, d1)>

// A producer that a later kernel also reads is computed once, in the loop,
// which yields it for that reader. The GEMM is neither tiled nor fused.
// CHECK-LABEL: func.func @yield_for_later_reader
// CHECK: %[[LOOP:.*]]:2 = scf.forall
// CHECK: arith.addf
// CHECK: arith.mulf
// CHECK: scf.forall.in_parallel
// CHECK-COUNT-2: tensor.parallel_insert_slice
// CHECK: %[[GEMM:.*]] = linalg.generic {{.*}} ins(%[[LOOP]]#{{[01]}}, %{{.*}} : tensor<32x8xf32>, tensor<4x8xf32>)
// CHECK-NOT: scf.forall
// CHECK: return
func.func @yield_for_later_reader(%a: tensor<32x8xf32>, %b: tensor<32x8xf32>, %w: tensor<4x8xf32>, %c: tensor<32x4xf32>) -> (tensor<32x8xf32>, tensor<32x4xf32>) {
  %e = tensor.empty() : tensor<32x8xf32>
  %sum = linalg.generic {indexing_maps = [#x, #x, #x], iterator_types = ["parallel", "parallel"]}
      ins(%a, %b : tensor<32x8xf32>, tensor<32x8xf32>) outs(%e : tensor<32x8xf32>) {
  ^bb0(%p: f32, %q: f32, %o: f32):
    %s = arith.addf %p, %q : f32
    linalg.yield %s : f32
  } -> tensor<32x8xf32>
  %sq = linalg.generic {indexing_maps = [#x, #x], iterator_types = ["parallel", "parallel"]}
      ins(%sum : tensor<32x8xf32>) outs(%e : tensor<32x8xf32>) {
  ^bb0(%p: f32, %o: f32):
    %s = arith.mulf %p, %p : f32
    linalg.yield %s : f32
  } -> tensor<32x8xf32>
  %y = linalg.generic {indexing_maps = [#mk, #nk, #mn], iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%sum, %w : tensor<32x8xf32>, tensor<4x8xf32>) outs(%c : tensor<32x4xf32>) {
  ^bb0(%p: f32, %q: f32, %o: f32):
    %m = arith.mulf %p, %q : f32
    %s = arith.addf %o, %m : f32
    linalg.yield %s : f32
  } -> tensor<32x4xf32>
  return %sq, %y : tensor<32x8xf32>, tensor<32x4xf32>
}

// -----

#x = affine_map<(d0, d1) -> (d0, d1)>
#c = affine_map<(d0, d1) -> (d1)>

// A kernel whose outermost loop is a reduction (a column sum over tokens)
// is left whole, as are declarations.
// CHECK-LABEL: func.func private @declared
// CHECK-LABEL: func.func @column_sum
// CHECK-NOT: scf.forall
// CHECK: linalg.generic
func.func private @declared(tensor<4xf32>)
func.func @column_sum(%x: tensor<64x8xf32>, %init: tensor<8xf32>) -> tensor<8xf32> {
  %y = linalg.generic {indexing_maps = [#x, #c], iterator_types = ["reduction", "parallel"]}
      ins(%x : tensor<64x8xf32>) outs(%init : tensor<8xf32>) {
  ^bb0(%p: f32, %o: f32):
    %s = arith.addf %o, %p : f32
    linalg.yield %s : f32
  } -> tensor<8xf32>
  return %y : tensor<8xf32>
}

// -----

#x = affine_map<(d0, d1, d2) -> (d0, d1, d2)>

// Stacked experts [E, k, f] with E = 4 < 16: one expert per tile, and its
// tokens in tiles of 16, so that four experts still make many tiles.
// CHECK-LABEL: func.func @stacked_experts
// CHECK: scf.forall (%[[E:.*]], %[[ROW:.*]]) = (0, 0) to (4, %{{.*}}) step (1, 16)
// CHECK: tensor.extract_slice %{{.*}}[%[[E]], %[[ROW]], 0] [1, %{{.*}}, 8] [1, 1, 1]
// CHECK: math.exp
func.func @stacked_experts(%h: tensor<4x?x8xf32>) -> tensor<4x?x8xf32> {
  %c1 = arith.constant 1 : index
  %k = tensor.dim %h, %c1 : tensor<4x?x8xf32>
  %e = tensor.empty(%k) : tensor<4x?x8xf32>
  %y = linalg.generic {indexing_maps = [#x, #x], iterator_types = ["parallel", "parallel", "parallel"]}
      ins(%h : tensor<4x?x8xf32>) outs(%e : tensor<4x?x8xf32>) {
  ^bb0(%p: f32, %o: f32):
    %s = math.exp %p : f32
    linalg.yield %s : f32
  } -> tensor<4x?x8xf32>
  return %y : tensor<4x?x8xf32>
}
