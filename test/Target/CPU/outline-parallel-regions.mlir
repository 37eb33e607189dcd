// RUN: moma-opt %s -moma-outline-parallel-regions | FileCheck %s

// Each top-level omp.parallel moves into an internal, never-inlined function
// of its own; the values it captures become arguments, constants are
// recomputed inside (LLVM keeps specializing on them), and a region nested
// in another moves with its parent.
// CHECK-LABEL: llvm.func @step(
// CHECK-SAME: %[[P:.*]]: !llvm.ptr, %[[N:.*]]: i64)
// CHECK: llvm.call @step_parallel_0(%[[N]], %[[P]]) : (i64, !llvm.ptr) -> ()
// CHECK-NEXT: llvm.call @step_parallel_1(%[[P]]) : (!llvm.ptr) -> ()
// CHECK-NEXT: llvm.return
// CHECK-LABEL: llvm.func internal @step_parallel_1(
// CHECK-SAME: %[[P1:.*]]: !llvm.ptr) attributes {no_inline}
// CHECK: %[[C:.*]] = llvm.mlir.constant(7 : i64) : i64
// CHECK: omp.parallel {
// CHECK: omp.parallel {
// CHECK: llvm.store %[[C]], %[[P1]]
// CHECK-LABEL: llvm.func internal @step_parallel_0(
// CHECK-SAME: %[[N0:.*]]: i64, %[[P0:.*]]: !llvm.ptr) attributes {no_inline}
// CHECK: omp.parallel {
// CHECK: llvm.store %[[N0]], %[[P0]]
llvm.func @step(%p: !llvm.ptr, %n: i64) {
  %c = llvm.mlir.constant(7 : i64) : i64
  omp.parallel {
    llvm.store %n, %p : i64, !llvm.ptr
    omp.terminator
  }
  omp.parallel {
    omp.parallel {
      llvm.store %c, %p : i64, !llvm.ptr
      omp.terminator
    }
    omp.terminator
  }
  llvm.return
}
