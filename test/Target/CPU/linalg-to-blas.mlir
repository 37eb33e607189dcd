// RUN: moma-opt %s -split-input-file -convert-linalg-to-blas | FileCheck %s

// x w^T on row-major buffers: no transpose for x, transpose for w. The call
// runs once per block of C's longer side, one block per OpenMP thread, in a
// parallel loop; an empty block makes no call.
// CHECK-LABEL: func.func @linear
// CHECK-DAG: %[[ROWMAJOR:.*]] = arith.constant 101 : i32
// CHECK-DAG: %[[NOTRANS:.*]] = arith.constant 111 : i32
// CHECK-DAG: %[[TRANS:.*]] = arith.constant 112 : i32
// CHECK-DAG: %[[ROWS:.*]] = memref.dim %{{.*}}, %c0 : memref<?x64xf32>
// CHECK: %[[THREADS:.*]] = call @omp_get_max_threads() : () -> i32
// CHECK: %[[BLOCKS:.*]] = arith.maxui
// CHECK: %[[BY_ROWS:.*]] = arith.cmpi uge, %[[ROWS]], %c32
// CHECK: scf.parallel (%[[BLOCK:.*]]) = (%c0) to (%[[BLOCKS]]) step (%c1) {
// CHECK: scf.if
// CHECK: } else {
// CHECK: call @momart_sgemm(%[[ROWMAJOR]], %[[NOTRANS]], %[[TRANS]], {{.*}}) : (i32, i32, i32, i32, i32, i32, f32, !llvm.ptr, i32, !llvm.ptr, i32, f32, !llvm.ptr, i32) -> ()
// CHECK-NOT: linalg.generic
func.func @linear(%x: memref<?x64xf32>, %w: memref<32x64xf32>, %y: memref<?x32xf32>) {
  linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d2)>,
                                   affine_map<(d0, d1, d2) -> (d1, d2)>,
                                   affine_map<(d0, d1, d2) -> (d0, d1)>],
                  iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%x, %w : memref<?x64xf32>, memref<32x64xf32>) outs(%y : memref<?x32xf32>) {
  ^bb0(%a: f32, %b: f32, %c: f32):
    %p = arith.mulf %a, %b : f32
    %s = arith.addf %c, %p : f32
    linalg.yield %s : f32
  }
  return
}

// -----

// Stacked experts: the experts and the blocks of each are one parallel loop.
// CHECK-LABEL: func.func @experts
// CHECK: scf.parallel (%[[E:.*]], %[[BLOCK:.*]]) = (%c0, %c0) to (%c4, %{{.*}})
// CHECK: arith.muli %[[E]]
// CHECK: call @momart_sgemm
func.func @experts(%x: memref<4x?x64xf32>, %w: memref<4x32x64xf32>, %y: memref<4x?x32xf32>) {
  linalg.generic {indexing_maps = [affine_map<(d0, d1, d2, d3) -> (d0, d1, d3)>,
                                   affine_map<(d0, d1, d2, d3) -> (d0, d2, d3)>,
                                   affine_map<(d0, d1, d2, d3) -> (d0, d1, d2)>],
                  iterator_types = ["parallel", "parallel", "parallel", "reduction"]}
      ins(%x, %w : memref<4x?x64xf32>, memref<4x32x64xf32>) outs(%y : memref<4x?x32xf32>) {
  ^bb0(%a: f32, %b: f32, %c: f32):
    %p = arith.mulf %a, %b : f32
    %s = arith.addf %c, %p : f32
    linalg.yield %s : f32
  }
  return
}

// -----

// C zeroed right before the GEMM: the fill goes, the call overwrites C
// (beta = 0). A fill of another value, or of another buffer, stays.
// CHECK-LABEL: func.func @zero_filled_output
// CHECK-NOT: linalg.fill
// CHECK-DAG: %[[ONE:.*]] = arith.constant 1.000000e+00 : f32
// CHECK-DAG: %[[ZERO:.*]] = arith.constant 0.000000e+00 : f32
// CHECK: call @momart_sgemm({{.*}}, %[[ONE]], {{.*}}, %[[ZERO]], {{.*}})
func.func @zero_filled_output(%x: memref<8x64xf32>, %w: memref<32x64xf32>) -> memref<8x32xf32> {
  %zero = arith.constant 0.0 : f32
  %y = memref.alloc() : memref<8x32xf32>
  linalg.fill ins(%zero : f32) outs(%y : memref<8x32xf32>)
  linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d2)>,
                                   affine_map<(d0, d1, d2) -> (d1, d2)>,
                                   affine_map<(d0, d1, d2) -> (d0, d1)>],
                  iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%x, %w : memref<8x64xf32>, memref<32x64xf32>) outs(%y : memref<8x32xf32>) {
  ^bb0(%a: f32, %b: f32, %c: f32):
    %p = arith.mulf %a, %b : f32
    %s = arith.addf %c, %p : f32
    linalg.yield %s : f32
  }
  return %y : memref<8x32xf32>
}

// CHECK-LABEL: func.func @one_filled_output
// CHECK: linalg.fill
// CHECK: call @momart_sgemm({{.*}}, %[[ONE:.*]], {{.*}}, %[[ONE]], {{.*}})
func.func @one_filled_output(%x: memref<8x64xf32>, %w: memref<32x64xf32>) -> memref<8x32xf32> {
  %one = arith.constant 1.0 : f32
  %y = memref.alloc() : memref<8x32xf32>
  linalg.fill ins(%one : f32) outs(%y : memref<8x32xf32>)
  linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d2)>,
                                   affine_map<(d0, d1, d2) -> (d1, d2)>,
                                   affine_map<(d0, d1, d2) -> (d0, d1)>],
                  iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%x, %w : memref<8x64xf32>, memref<32x64xf32>) outs(%y : memref<8x32xf32>) {
  ^bb0(%a: f32, %b: f32, %c: f32):
    %p = arith.mulf %a, %b : f32
    %s = arith.addf %c, %p : f32
    linalg.yield %s : f32
  }
  return %y : memref<8x32xf32>
}

// -----

// Not a multiply-accumulate: left alone.
// CHECK-LABEL: func.func @not_a_gemm
// CHECK: linalg.generic
// CHECK-NOT: momart_sgemm
func.func @not_a_gemm(%x: memref<8x64xf32>, %w: memref<32x64xf32>, %y: memref<8x32xf32>) {
  linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d2)>,
                                   affine_map<(d0, d1, d2) -> (d1, d2)>,
                                   affine_map<(d0, d1, d2) -> (d0, d1)>],
                  iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%x, %w : memref<8x64xf32>, memref<32x64xf32>) outs(%y : memref<8x32xf32>) {
  ^bb0(%a: f32, %b: f32, %c: f32):
    %p = arith.maximumf %a, %b : f32
    %s = arith.addf %c, %p : f32
    linalg.yield %s : f32
  }
  return
}

// -----

// bf16 operands widened in the body, an f32 accumulator: the same call
// structure, to the runtime's bf16 GEMM (cblas_sgemm's arguments), with
// addresses advanced by 2-byte elements.
// CHECK-LABEL: func.func @bf16_operands
// CHECK-DAG: %[[TWO:.*]] = arith.constant 2 : index
// CHECK: scf.parallel
// CHECK: arith.muli %{{.*}}, %[[TWO]] : index
// CHECK: call @momart_gemm_bf16({{.*}}) : (i32, i32, i32, i32, i32, i32, f32, !llvm.ptr, i32, !llvm.ptr, i32, f32, !llvm.ptr, i32) -> ()
// CHECK-NOT: momart_sgemm
// CHECK-NOT: linalg.generic
func.func @bf16_operands(%x: memref<?x64xbf16>, %w: memref<32x64xbf16>, %y: memref<?x32xf32>) {
  linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d2)>,
                                   affine_map<(d0, d1, d2) -> (d1, d2)>,
                                   affine_map<(d0, d1, d2) -> (d0, d1)>],
                  iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%x, %w : memref<?x64xbf16>, memref<32x64xbf16>) outs(%y : memref<?x32xf32>) {
  ^bb0(%a: bf16, %b: bf16, %c: f32):
    %aw = arith.extf %a : bf16 to f32
    %bw = arith.extf %b : bf16 to f32
    %p = arith.mulf %aw, %bw : f32
    %s = arith.addf %c, %p : f32
    linalg.yield %s : f32
  }
  return
}

// -----

// A bf16 accumulator is not a GEMM the runtime has: it stays a loop nest.
// CHECK-LABEL: func.func @bf16_accumulator
// CHECK-NOT: call
// CHECK: linalg.generic
func.func @bf16_accumulator(%x: memref<?x64xbf16>, %w: memref<32x64xbf16>, %y: memref<?x32xbf16>) {
  linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d2)>,
                                   affine_map<(d0, d1, d2) -> (d1, d2)>,
                                   affine_map<(d0, d1, d2) -> (d0, d1)>],
                  iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%x, %w : memref<?x64xbf16>, memref<32x64xbf16>) outs(%y : memref<?x32xbf16>) {
  ^bb0(%a: bf16, %b: bf16, %c: bf16):
    %p = arith.mulf %a, %b : bf16
    %s = arith.addf %c, %p : bf16
    linalg.yield %s : bf16
  }
  return
}

// -----

// The named contraction the lowering emits (linalg.contract), inside a tile
// (attention's p v, per head and block): the tile already runs on one of
// the threads, so it is one call, with no loop or thread query of its own;
// the strided head slices give the leading dimensions, and C is
// accumulated (beta 1, no zero fill before it).
// CHECK-LABEL: func.func @tile_gemm
// CHECK: scf.forall
// CHECK-NOT: omp_get_max_threads
// CHECK-NOT: scf.parallel
// CHECK: call @momart_sgemm(%c101_i32, %c111_i32, %c111_i32, %c8_i32, %c16_i32, %c8_i32, %cst, %{{.*}}, %c8_i32, %{{.*}}, %c64_i32, %cst, %{{.*}}, %c64_i32) : (i32, i32, i32, i32, i32, i32, f32, !llvm.ptr, i32, !llvm.ptr, i32, f32, !llvm.ptr, i32) -> ()
// CHECK-NOT: linalg.contract
func.func @tile_gemm(%p: memref<4x8x8xf32>, %v: memref<8x64xf32>, %out: memref<8x64xf32>) {
  scf.forall (%h) in (4) {
    %c16 = arith.constant 16 : index
    %col = arith.muli %h, %c16 : index
    %ph = memref.subview %p[%h, 0, 0] [1, 8, 8] [1, 1, 1] : memref<4x8x8xf32> to memref<8x8xf32, strided<[8, 1], offset: ?>>
    %vh = memref.subview %v[0, %col] [8, 16] [1, 1] : memref<8x64xf32> to memref<8x16xf32, strided<[64, 1], offset: ?>>
    %oh = memref.subview %out[0, %col] [8, 16] [1, 1] : memref<8x64xf32> to memref<8x16xf32, strided<[64, 1], offset: ?>>
    linalg.contract indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d2)>,
                                     affine_map<(d0, d1, d2) -> (d2, d1)>,
                                     affine_map<(d0, d1, d2) -> (d0, d1)>]
        ins(%ph, %vh : memref<8x8xf32, strided<[8, 1], offset: ?>>, memref<8x16xf32, strided<[64, 1], offset: ?>>)
        outs(%oh : memref<8x16xf32, strided<[64, 1], offset: ?>>)
  }
  return
}
