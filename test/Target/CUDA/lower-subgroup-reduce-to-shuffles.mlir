// RUN: moma-opt %s -moma-lower-subgroup-reduce-to-shuffles | FileCheck %s
// RUN: moma-opt %s -moma-lower-subgroup-reduce-to-shuffles -convert-gpu-to-nvvm | FileCheck %s --check-prefix=NVVM

// A warp's sum and max: five butterfly rounds each (xor 1, 2, 4, 8, 16
// over a width of 32 lanes), each round combining the lane's value with
// its partner's, so that every lane ends with the warp's total. A bf16
// value travels widened to 32 bits. For NVVM, each round is one
// shfl.sync bfly over the full warp.

// CHECK-LABEL: gpu.func @warp_sum
// CHECK-DAG:     %[[W:.*]] = arith.constant 32 : i32
// CHECK-NOT:     gpu.subgroup_reduce
// CHECK:         %[[S1:.*]], %{{.*}} = gpu.shuffle xor %arg0, %{{.*}}, %[[W]] : f32
// CHECK:         %[[A1:.*]] = arith.addf %arg0, %[[S1]] : f32
// CHECK:         gpu.shuffle xor %[[A1]], %{{.*}}, %[[W]] : f32
// CHECK-COUNT-3: gpu.shuffle xor %{{.*}}, %{{.*}}, %[[W]] : f32
// CHECK:         %[[SUM:.*]] = arith.addf
// CHECK-COUNT-5: arith.maximumf
// CHECK-COUNT-5: gpu.shuffle xor %{{.*}} : i32
// CHECK:         memref.store %[[SUM]], %arg3[%{{.*}}]
// CHECK-NOT:     gpu.subgroup_reduce

// NVVM-LABEL: llvm.func @warp_sum
// NVVM-COUNT-15: nvvm.shfl.sync bfly
// NVVM-NOT:     nvvm.shfl.sync
gpu.module @kernels {
  gpu.func @warp_sum(%x: f32, %m: f32, %h: bf16, %out: memref<3xf32>, %outh: memref<1xbf16>) kernel {
    %s = gpu.subgroup_reduce add %x uniform : (f32) -> f32
    %mx = gpu.subgroup_reduce maximumf %m uniform : (f32) -> f32
    %hs = gpu.subgroup_reduce add %h uniform : (bf16) -> bf16
    %c0 = arith.constant 0 : index
    %c1 = arith.constant 1 : index
    memref.store %s, %out[%c0] : memref<3xf32>
    memref.store %mx, %out[%c1] : memref<3xf32>
    memref.store %hs, %outh[%c0] : memref<1xbf16>
    gpu.return
  }
}
