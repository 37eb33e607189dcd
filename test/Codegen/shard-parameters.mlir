// RUN: moma-opt %s -split-input-file -verify-diagnostics -moma-shard-parameters | FileCheck %s

// Two units: layer 0 (a 4x4 weight at offset 0 and a norm at 16: 32
// elements, 128 bytes) and layer 1 (16 elements). Layer 0 is used in the
// forward pass and again at the end of the backward pass: two windows, two
// gathers. Layer 1's forward use and its backward use follow each other:
// one window. Each gather but the first starts when the window before it
// starts (prefetch) and is waited for just before its first use; each
// buffer is freed after its last use. Gradients go to a unit buffer that is
// reduce-scattered right after the unit's last gradient write. The entry
// point keeps only its data arguments.
// CHECK-LABEL: func.func @fsdp_grad(
// CHECK-SAME: %[[TOKENS:.*]]: memref<4xi32> {moma.param = "tokens"}, %[[LOSS:.*]]: memref<f32> {moma.result = "loss"})
// CHECK: %[[ACT:.*]] = memref.alloc() : memref<4x4xf32>
// CHECK: %[[L0:.*]] = memref.alloc() {alignment = 64 : i64} : memref<128xi8>
// CHECK: %[[NORM0:.*]] = memref.view %[[L0]][%c64{{.*}}][] : memref<128xi8> to memref<4xf32>
// CHECK: %[[W0:.*]] = memref.view %[[L0]][%c0{{.*}}][] : memref<128xi8> to memref<4x4xf32>
// CHECK: call @momart_fsdp_all_gather_start(%c0_i32
// CHECK: call @momart_fsdp_all_gather_wait(%c0_i32
// CHECK: %[[L1:.*]] = memref.alloc() {alignment = 64 : i64} : memref<64xi8>
// CHECK: %[[W1:.*]] = memref.view %[[L1]]
// CHECK: call @momart_fsdp_all_gather_start(%c1_i32
// CHECK-NEXT: memref.copy %[[W0]], %[[ACT]]
// CHECK-NEXT: %[[HALF:.*]] = memref.subview %[[NORM0]][0] [2] [1]
// CHECK-NEXT: memref.copy %[[HALF]]
// CHECK-NEXT: memref.dealloc %[[L0]]
// CHECK: call @momart_fsdp_all_gather_wait(%c1_i32
// CHECK: %[[L0B:.*]] = memref.alloc() {alignment = 64 : i64} : memref<128xi8>
// CHECK: %[[NORM0B:.*]] = memref.view %[[L0B]]
// CHECK: %[[W0B:.*]] = memref.view %[[L0B]]
// CHECK: call @momart_fsdp_all_gather_start(%c0_i32
// CHECK-NEXT: memref.copy %[[W1]], %[[ACT]]
// CHECK-NEXT: memref.copy %[[W1]], %[[ACT]]
// CHECK-NEXT: memref.dealloc %[[L1]]
// CHECK: %[[G1:.*]] = memref.alloc() {alignment = 64 : i64} : memref<64xi8>
// CHECK: %[[G1W:.*]] = memref.view %[[G1]]
// CHECK-NEXT: memref.copy %[[ACT]], %[[G1W]]
// CHECK: call @momart_fsdp_reduce_scatter(%c1_i32
// CHECK-NEXT: memref.dealloc %[[G1]]
// CHECK: call @momart_fsdp_all_gather_wait(%c0_i32
// CHECK-NEXT: %[[HALFB:.*]] = memref.subview %[[NORM0B]][0] [2] [1]
// CHECK-NEXT: memref.copy %[[W0B]], %[[ACT]]
// CHECK: %[[G0:.*]] = memref.alloc() {alignment = 64 : i64} : memref<128xi8>
// CHECK: %[[GN0:.*]] = memref.view %[[G0]][%c64{{.*}}][] : memref<128xi8> to memref<4xf32>
// CHECK: %[[GW0:.*]] = memref.view %[[G0]][%c0{{.*}}][] : memref<128xi8> to memref<4x4xf32>
// CHECK-NEXT: memref.copy %[[ACT]], %[[GW0]]
// CHECK-NEXT: memref.copy %[[HALFB]]
// CHECK-NEXT: memref.copy %[[NORM0B]], %[[GN0]]
// CHECK: call @momart_fsdp_reduce_scatter(%c0_i32
// CHECK-NEXT: memref.dealloc %[[G0]]
// CHECK-NEXT: memref.dealloc %[[L0B]]
// CHECK-NOT: momart_fsdp
// CHECK: return
// CHECK: func.func private @momart_fsdp_all_gather_start(i32, !llvm.ptr)
// CHECK: func.func private @momart_fsdp_all_gather_wait(i32, !llvm.ptr)
// CHECK: func.func private @momart_fsdp_reduce_scatter(i32, !llvm.ptr)
func.func @fsdp_grad(
    %tokens: memref<4xi32> {moma.param = "tokens"},
    %w0: memref<4x4xf32> {moma.param = "layers.0.w", moma.shard_offset = 0 : i64, moma.shard_unit = 0 : i64},
    %n0: memref<4xf32> {moma.param = "layers.0.norm", moma.shard_offset = 16 : i64, moma.shard_unit = 0 : i64},
    %w1: memref<4x4xf32> {moma.param = "layers.1.w", moma.shard_offset = 0 : i64, moma.shard_unit = 1 : i64},
    %loss: memref<f32> {moma.result = "loss"},
    %g0: memref<4x4xf32> {moma.result = "grad.layers.0.w", moma.shard_offset = 0 : i64, moma.shard_unit = 0 : i64},
    %gn0: memref<4xf32> {moma.result = "grad.layers.0.norm", moma.shard_offset = 16 : i64, moma.shard_unit = 0 : i64},
    %g1: memref<4x4xf32> {moma.result = "grad.layers.1.w", moma.shard_offset = 0 : i64, moma.shard_unit = 1 : i64})
    attributes {moma.sharded_parameters, moma.shard_units = ["layers.0", "layers.1"],
                moma.shard_unit_elements = array<i64: 32, 16>} {
  %act = memref.alloc() : memref<4x4xf32>
  %row = memref.alloc() : memref<2xf32>
  // Forward: layer 0, then layer 1.
  memref.copy %w0, %act : memref<4x4xf32> to memref<4x4xf32>
  %half = memref.subview %n0[0] [2] [1] : memref<4xf32> to memref<2xf32, strided<[1]>>
  memref.copy %half, %row : memref<2xf32, strided<[1]>> to memref<2xf32>
  memref.copy %w1, %act : memref<4x4xf32> to memref<4x4xf32>
  // Backward: layer 1 (its weight again, then its gradient), then layer 0.
  memref.copy %w1, %act : memref<4x4xf32> to memref<4x4xf32>
  memref.copy %act, %g1 : memref<4x4xf32> to memref<4x4xf32>
  memref.copy %w0, %act : memref<4x4xf32> to memref<4x4xf32>
  memref.copy %act, %g0 : memref<4x4xf32> to memref<4x4xf32>
  memref.copy %half, %row : memref<2xf32, strided<[1]>> to memref<2xf32>
  memref.copy %n0, %gn0 : memref<4xf32> to memref<4xf32>
  memref.dealloc %act : memref<4x4xf32>
  memref.dealloc %row : memref<2xf32>
  return
}

// -----

// Functions without moma.sharded_parameters are left alone.
// CHECK-LABEL: func.func @grad(
// CHECK-SAME: %{{.*}}: memref<4x4xf32> {moma.param = "layers.0.w"}
// CHECK-NOT: momart_fsdp
func.func @grad(%w0: memref<4x4xf32> {moma.param = "layers.0.w"},
                %out: memref<4x4xf32> {moma.result = "loss"}) {
  memref.copy %w0, %out : memref<4x4xf32> to memref<4x4xf32>
  return
}

// -----

// expected-error @below {{sharded argument #0 needs a unit, an offset and an identity-layout static f32 memref}}
func.func @fsdp_grad(%w0: memref<?xf32> {moma.param = "layers.0.w", moma.shard_offset = 0 : i64, moma.shard_unit = 0 : i64})
    attributes {moma.sharded_parameters, moma.shard_units = ["layers.0"],
                moma.shard_unit_elements = array<i64: 16>} {
  return
}
