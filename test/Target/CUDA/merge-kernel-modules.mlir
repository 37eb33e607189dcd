// RUN: moma-opt %s -moma-merge-kernel-modules | FileCheck %s

// Outlined kernels, each in a module of its own under the same function
// name, end up in one module under their modules' names, with
// nvvm.minctasm = 1; the launches follow them. The third kernel is the
// first one again (another layer's copy): it goes, and its launch uses
// the first.

// CHECK:     gpu.module @momac_kernels {
// CHECK:       gpu.func @forward_kernel(%{{.*}}: memref<4xf32>) kernel attributes {nvvm.minctasm = 1 : i32}
// CHECK:       gpu.func @forward_kernel_0(%{{.*}}: memref<4xf32>) kernel attributes {nvvm.minctasm = 1 : i32}
// CHECK-NOT: gpu.func
// CHECK-NOT: gpu.module
// CHECK:     func.func @forward
// CHECK:       gpu.launch_func @momac_kernels::@forward_kernel blocks
// CHECK:       gpu.launch_func @momac_kernels::@forward_kernel_0 blocks
// CHECK:       gpu.launch_func @momac_kernels::@forward_kernel blocks
module attributes {gpu.container_module} {
  gpu.module @forward_kernel {
    gpu.func @forward_kernel(%a: memref<4xf32>) kernel {
      gpu.return
    }
  }
  gpu.module @forward_kernel_0 {
    gpu.func @forward_kernel(%a: memref<4xf32>) kernel {
      %c0 = arith.constant 0 : index
      %x = memref.load %a[%c0] : memref<4xf32>
      memref.store %x, %a[%c0] : memref<4xf32>
      gpu.return
    }
  }
  gpu.module @forward_kernel_1 {
    gpu.func @forward_kernel(%b: memref<4xf32>) kernel {
      gpu.return
    }
  }
  func.func @forward(%a: memref<4xf32>) {
    %c1 = arith.constant 1 : index
    gpu.launch_func @forward_kernel::@forward_kernel blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1) args(%a : memref<4xf32>)
    gpu.launch_func @forward_kernel_0::@forward_kernel blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1) args(%a : memref<4xf32>)
    gpu.launch_func @forward_kernel_1::@forward_kernel blocks in (%c1, %c1, %c1) threads in (%c1, %c1, %c1) args(%a : memref<4xf32>)
    return
  }
}
