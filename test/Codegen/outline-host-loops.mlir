// RUN: moma-opt %s -split-input-file -moma-outline-host-loops | FileCheck %s

// The loops of an entry point's host code (here a count over the token ids,
// as the modality partition's lowering leaves it) become internal functions
// called in their place: what they read from outside are arguments, except
// constants, which are cloned in. The entry point keeps only straight-line
// code.
// CHECK-LABEL: func.func @grad(
// CHECK-SAME: %[[N:.*]]: index, %[[IDS:.*]]: !llvm.struct
// CHECK-NOT: scf.for
// CHECK: %[[COUNT:.*]] = call @grad_loop_0(%[[N]], %[[IDS]]) : (index, !llvm.struct<(ptr, ptr, i64, array<1 x i64>, array<1 x i64>)>) -> index
// A loop that reads a memref from outside stays: entry points pass memrefs
// as bare pointers, which cannot carry a dynamic size.
// CHECK: scf.for
// CHECK: memref.load
// CHECK: return %[[COUNT]]

// CHECK-LABEL: func.func private @grad_loop_0(
// CHECK-SAME: %[[N:.*]]: index, %[[IDS:.*]]: !llvm.struct<(ptr, ptr, i64, array<1 x i64>, array<1 x i64>)>) -> index
// CHECK-SAME: llvm.linkage = #llvm.linkage<internal>
// CHECK-DAG: %[[C0:.*]] = arith.constant 0 : index
// CHECK-DAG: %[[C1:.*]] = arith.constant 1 : index
// CHECK-DAG: %[[LIMIT:.*]] = arith.constant 256 : i32
// CHECK: %[[SUM:.*]] = scf.for %{{.*}} = %[[C0]] to %[[N]] step %[[C1]] iter_args(%{{.*}} = %[[C0]]) -> (index)
// CHECK: llvm.extractvalue %[[IDS]][1]
// CHECK: arith.cmpi slt, %{{.*}}, %[[LIMIT]]
// CHECK: return %[[SUM]] : index
func.func @grad(%n: index, %ids: !llvm.struct<(ptr, ptr, i64, array<1 x i64>, array<1 x i64>)>,
                %buffer: memref<?xf32>) -> index {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %limit = arith.constant 256 : i32
  %count = scf.for %i = %c0 to %n step %c1 iter_args(%acc = %c0) -> (index) {
    %i64 = arith.index_cast %i : index to i64
    %base = llvm.extractvalue %ids[1] : !llvm.struct<(ptr, ptr, i64, array<1 x i64>, array<1 x i64>)>
    %address = llvm.getelementptr %base[%i64] : (!llvm.ptr, i64) -> !llvm.ptr, i32
    %id = llvm.load %address : !llvm.ptr -> i32
    %text = arith.cmpi slt, %id, %limit : i32
    %one = arith.select %text, %c1, %c0 : index
    %next = arith.addi %acc, %one : index
    scf.yield %next : index
  }
  %zero = arith.constant 0.0 : f32
  scf.for %i = %c0 to %n step %c1 {
    %x = memref.load %buffer[%i] : memref<?xf32>
    %y = arith.addf %x, %zero : f32
    memref.store %y, %buffer[%i] : memref<?xf32>
  }
  return %count : index
}

// -----

// A loop that allocates on the stack stays too: its allocation would not
// outlive the call.
// CHECK-LABEL: func.func @stack(
// CHECK: scf.for
// CHECK: llvm.alloca
// CHECK-NOT: func.func private @stack_loop_0
func.func @stack(%n: index) {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %one = llvm.mlir.constant(1 : i64) : i64
  scf.for %i = %c0 to %n step %c1 {
    %slot = llvm.alloca %one x i64 : (i64) -> !llvm.ptr
  }
  return
}
