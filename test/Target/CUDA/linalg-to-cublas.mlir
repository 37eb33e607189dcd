// RUN: moma-opt %s -split-input-file -convert-linalg-to-cublas | FileCheck %s

// x w^T after a zero fill: one call, no transpose for x, transpose for w,
// beta = 0 (the fill goes), batch 1.
// CHECK-LABEL: func.func @linear
// CHECK-DAG:   %[[NO:.*]] = arith.constant 0 : i32
// CHECK-DAG:   %[[YES:.*]] = arith.constant 1 : i32
// CHECK-DAG:   %[[BETA:.*]] = arith.constant 0.000000e+00 : f32
// CHECK-NOT:   linalg.fill
// CHECK:       call @momart_cuda_gemm_f32(%[[NO]], %[[YES]], %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[BETA]], %{{.*}}, %{{.*}}, %{{.*}}, %[[YES]]) : (i32, i32, i32, i32, i32, !llvm.ptr, i64, i64, !llvm.ptr, i64, i64, f32, !llvm.ptr, i64, i64, i32) -> ()
// CHECK-NOT:   linalg.generic
func.func @linear(%x: memref<?x64xf32>, %w: memref<32x64xf32>, %y: memref<?x32xf32>) {
  %zero = arith.constant 0.0 : f32
  linalg.fill ins(%zero : f32) outs(%y : memref<?x32xf32>)
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

// Stacked experts accumulate (beta = 1) in one strided-batched call over
// the 4 experts: w's expert stride is 32 * 64 elements, the token
// dimension's strides come from the buffers' metadata.
// CHECK-LABEL: func.func @experts
// CHECK-DAG:   %[[BETA:.*]] = arith.constant 1.000000e+00 : f32
// CHECK-DAG:   %[[FOUR:.*]] = arith.constant 4 : i32
// CHECK-DAG:   %[[SB:.*]] = arith.constant 2048 : i64
// CHECK:       %{{.*}}, %{{.*}}, %{{.*}}:3, %[[SX:.*]]:3 = memref.extract_strided_metadata %arg0
// CHECK:       %[[SA:.*]] = arith.index_cast %[[SX]]#0 : index to i64
// CHECK:       call @momart_cuda_gemm_f32(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[SA]], %{{.*}}, %{{.*}}, %[[SB]], %[[BETA]], %{{.*}}, %{{.*}}, %{{.*}}, %[[FOUR]])
// CHECK-NOT:   scf.for
func.func @experts(%x: memref<4x?x64xf32>, %w: memref<4x32x64xf32>, %y: memref<4x?x32xf32>) {
  linalg.generic {indexing_maps = [affine_map<(e, d0, d1, d2) -> (e, d0, d2)>,
                                   affine_map<(e, d0, d1, d2) -> (e, d1, d2)>,
                                   affine_map<(e, d0, d1, d2) -> (e, d0, d1)>],
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

// bf16 operands widened in the body, f32 accumulator: the bf16 GEMM; A is
// read transposed ([K, M] with unit stride along M).
// CHECK-LABEL: func.func @bf16_transposed
// CHECK-DAG:   %[[YES:.*]] = arith.constant 1 : i32
// CHECK-DAG:   %[[NO:.*]] = arith.constant 0 : i32
// CHECK:       call @momart_cuda_gemm_bf16(%[[YES]], %[[NO]],
func.func @bf16_transposed(%x: memref<64x?xbf16>, %w: memref<64x32xbf16>, %y: memref<?x32xf32>) {
  linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d2, d0)>,
                                   affine_map<(d0, d1, d2) -> (d2, d1)>,
                                   affine_map<(d0, d1, d2) -> (d0, d1)>],
                  iterator_types = ["parallel", "parallel", "reduction"]}
      ins(%x, %w : memref<64x?xbf16>, memref<64x32xbf16>) outs(%y : memref<?x32xf32>) {
  ^bb0(%a: bf16, %b: bf16, %c: f32):
    %a32 = arith.extf %a : bf16 to f32
    %b32 = arith.extf %b : bf16 to f32
    %p = arith.mulf %a32, %b32 : f32
    %s = arith.addf %c, %p : f32
    linalg.yield %s : f32
  }
  return
}

// -----

// Inside a tile the contraction is the kernel's own code: no call.
// CHECK-LABEL: func.func @in_tile
// CHECK-NOT:   call
// CHECK:       linalg.generic
func.func @in_tile(%x: memref<4x8x16xf32>, %w: memref<4x16x8xf32>, %y: memref<4x8x8xf32>) {
  scf.forall (%i) in (4) {
    %xs = memref.subview %x[%i, 0, 0] [1, 8, 16] [1, 1, 1] : memref<4x8x16xf32> to memref<8x16xf32, strided<[16, 1], offset: ?>>
    %ws = memref.subview %w[%i, 0, 0] [1, 16, 8] [1, 1, 1] : memref<4x16x8xf32> to memref<16x8xf32, strided<[8, 1], offset: ?>>
    %ys = memref.subview %y[%i, 0, 0] [1, 8, 8] [1, 1, 1] : memref<4x8x8xf32> to memref<8x8xf32, strided<[8, 1], offset: ?>>
    linalg.generic {indexing_maps = [affine_map<(d0, d1, d2) -> (d0, d2)>,
                                     affine_map<(d0, d1, d2) -> (d2, d1)>,
                                     affine_map<(d0, d1, d2) -> (d0, d1)>],
                    iterator_types = ["parallel", "parallel", "reduction"]}
        ins(%xs, %ws : memref<8x16xf32, strided<[16, 1], offset: ?>>, memref<16x8xf32, strided<[8, 1], offset: ?>>) outs(%ys : memref<8x8xf32, strided<[8, 1], offset: ?>>) {
    ^bb0(%a: f32, %b: f32, %c: f32):
      %p = arith.mulf %a, %b : f32
      %s = arith.addf %c, %p : f32
      linalg.yield %s : f32
    }
  }
  return
}
