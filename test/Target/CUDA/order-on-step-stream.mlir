// RUN: moma-opt %s -moma-order-on-step-stream | FileCheck %s

// The GPU ops of a function become one chain of async tokens from one
// `gpu.wait async` (the step's stream); library calls join the stream
// without a wait; the function waits for the chain only before it returns.
// A host loop's body gets a chain of its own.

// CHECK-LABEL: func.func @step
// CHECK:         %[[T0:.*]] = gpu.wait async
// CHECK:         %[[BUF:.*]], %[[T1:.*]] = gpu.alloc async [%[[T0]]] ()
// CHECK:         %[[T2:.*]] = gpu.launch async [%[[T1]]]
// CHECK-NOT:     gpu.wait
// CHECK:         call @momart_cuda_gemm_f32
// CHECK-NOT:     gpu.wait
// CHECK:         %[[T3:.*]] = gpu.memcpy async [%[[T2]]] %arg0, %[[BUF]]
// CHECK:         scf.for
// CHECK:           %[[L0:.*]] = gpu.wait async
// CHECK:           gpu.launch async [%[[L0]]]
// CHECK-NOT:       gpu.wait [
// CHECK:         }
// CHECK:         %[[T4:.*]] = gpu.dealloc async [%[[T3]]] %[[BUF]]
// CHECK-NEXT:    gpu.wait [%[[T4]]]
// CHECK-NEXT:    return
func.func private @momart_cuda_gemm_f32()
func.func @step(%out: memref<4xf32>) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %c4 = arith.constant 4 : index
  %buf = gpu.alloc () : memref<4xf32>
  gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1) threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
    gpu.terminator
  }
  call @momart_cuda_gemm_f32() : () -> ()
  gpu.memcpy %out, %buf : memref<4xf32>, memref<4xf32>
  scf.for %i = %c0 to %c4 step %c1 {
    gpu.launch blocks(%bx, %by, %bz) in (%gx = %c1, %gy = %c1, %gz = %c1) threads(%tx, %ty, %tz) in (%sx = %c1, %sy = %c1, %sz = %c1) {
      gpu.terminator
    }
  }
  gpu.dealloc %buf : memref<4xf32>
  return
}
