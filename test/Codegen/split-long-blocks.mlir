// RUN: moma-opt %s -split-input-file -pass-pipeline='builtin.module(func.func(moma-split-long-blocks{max-operations=3}))' | FileCheck %s

// A long straight-line block becomes a chain of blocks of at most three
// operations each (besides the branch, or the terminator in the last), in
// the same order; the stack allocations at its head stay in the entry
// block. Values flow across the cuts unchanged.
// CHECK-LABEL: func.func @entry(
// CHECK-SAME: %[[X:.*]]: i64
// CHECK-NEXT: %[[ONE:.*]] = llvm.mlir.constant(1 : i64) : i64
// CHECK-NEXT: llvm.alloca
// CHECK-NEXT: llvm.alloca
// CHECK-NEXT: %[[A:.*]] = arith.addi %[[X]], %[[ONE]]
// CHECK-NEXT: %[[B:.*]] = arith.addi %[[A]], %[[ONE]]
// CHECK-NEXT: %[[C:.*]] = arith.addi %[[B]], %[[ONE]]
// CHECK-NEXT: cf.br ^[[BB1:.*]]
// CHECK-NEXT: ^[[BB1]]:
// CHECK-NEXT: %[[D:.*]] = arith.addi %[[C]], %[[ONE]]
// CHECK-NEXT: %[[E:.*]] = arith.addi %[[D]], %[[ONE]]
// CHECK-NEXT: %[[F:.*]] = arith.addi %[[E]], %[[ONE]]
// CHECK-NEXT: return %[[F]]
// CHECK-NEXT: }
func.func @entry(%x: i64) -> i64 {
  %one = llvm.mlir.constant(1 : i64) : i64
  %p = llvm.alloca %one x i64 : (i64) -> !llvm.ptr
  %q = llvm.alloca %one x i64 : (i64) -> !llvm.ptr
  %a = arith.addi %x, %one : i64
  %b = arith.addi %a, %one : i64
  %c = arith.addi %b, %one : i64
  %d = arith.addi %c, %one : i64
  %e = arith.addi %d, %one : i64
  %f = arith.addi %e, %one : i64
  return %f : i64
}

// -----

// A block no longer than the limit is left as it is.
// CHECK-LABEL: func.func @short(
// CHECK-NOT: cf.br
// CHECK: return
func.func @short(%x: i64) -> i64 {
  %a = arith.addi %x, %x : i64
  %b = arith.addi %a, %x : i64
  return %b : i64
}
