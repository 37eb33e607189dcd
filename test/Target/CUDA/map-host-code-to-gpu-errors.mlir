// RUN: moma-opt %s -moma-map-host-code-to-gpu -verify-diagnostics

// A host scalar that device code would read (here a kernel copies it) is an
// error: on a GPU it would read host memory.
func.func @host_scalar_read_by_a_kernel(%rows: memref<i32> {moma.host_scalar}, %out: memref<i32>) {
  // expected-error @+1 {{argument 0 is passed in host memory (moma.host_scalar), but device code would read it here}}
  linalg.copy ins(%rows : memref<i32>) outs(%out : memref<i32>)
  return
}

// A block is whole warps (they share reductions).
// RUN: not moma-opt %s --pass-pipeline='builtin.module(func.func(moma-map-host-code-to-gpu{threads-per-block=48}))' 2>&1 | FileCheck %s --check-prefix=THREADS
// THREADS: threads-per-block must be a positive multiple of 32, got 48
