// RUN: moma-opt %s -split-input-file -moma-write-results-in-place -verify-diagnostics | FileCheck %s

// AdamW's new parameter is an out-parameter marked moma.in_place: the
// caller passes the parameter's own buffer for it, so the update kernel
// reads and writes one memref (one pointer for LLVM's vectorizer). The
// out-parameter stays in the signature, unused; a result that is not in
// place keeps its own buffer.
// CHECK-LABEL: func.func @optimizer_step(
// CHECK-SAME: %[[W:[a-z0-9]+]]: memref<8xf32> {moma.param = "w"}, %[[G:[a-z0-9]+]]: memref<8xf32> {moma.param = "grad.w"}
// CHECK-SAME: %[[NORM:[a-z0-9]+]]: memref<f32> {moma.result = "grad_norm"}
// CHECK: linalg.generic {{.*}} ins(%[[W]], %[[G]] : memref<8xf32>, memref<8xf32>) outs(%[[W]] : memref<8xf32>)
// CHECK: memref.store %{{.*}}, %[[NORM]][]
#map = affine_map<(d0) -> (d0)>
func.func @optimizer_step(%w: memref<8xf32> {moma.param = "w"},
                          %g: memref<8xf32> {moma.param = "grad.w"},
                          %w_out: memref<8xf32> {moma.result = "w", moma.in_place},
                          %norm: memref<f32> {moma.result = "grad_norm"}) {
  linalg.generic {indexing_maps = [#map, #map, #map], iterator_types = ["parallel"]}
      ins(%w, %g : memref<8xf32>, memref<8xf32>) outs(%w_out : memref<8xf32>) {
  ^bb0(%a: f32, %b: f32, %c: f32):
    %d = arith.subf %a, %b : f32
    linalg.yield %d : f32
  }
  %zero = arith.constant 0.0 : f32
  memref.store %zero, %norm[] : memref<f32>
  return
}

// -----

// An in-place result needs an argument of its name and type.
// expected-error @+1 {{in-place result #1 has no argument of its name and type}}
func.func @mismatched(%w: memref<8xf32> {moma.param = "w"},
                      %w_out: memref<4xf32> {moma.result = "w", moma.in_place}) {
  return
}
