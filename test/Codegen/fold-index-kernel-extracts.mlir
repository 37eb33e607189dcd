// RUN: moma-opt %s -split-input-file -moma-fold-index-kernel-extracts -canonicalize | FileCheck %s

// The token positions' sequence ids (n div seq_len), sliced to the batch's
// n tokens: attention's sequence count (last id + 1) becomes arithmetic on
// n; the kernel itself stays for its other readers.
// CHECK-LABEL: func.func @sequence_count
// CHECK-SAME: (%[[N:.*]]: index)
// CHECK: %[[IDS:.*]]:2 = linalg.generic
// CHECK: %[[LAST:.*]] = arith.subi %[[N]], %c1
// CHECK: %[[ID:.*]] = arith.divui %[[LAST]], %c128
// CHECK: %[[COUNT:.*]] = arith.addi %[[ID]], %c1
// CHECK-NOT: tensor.extract
// CHECK: return %[[COUNT]], %[[IDS]]#0
func.func @sequence_count(%n: index) -> (index, tensor<1024xi32>) {
  %c1 = arith.constant 1 : index
  %c128 = arith.constant 128 : index
  %e0 = tensor.empty() : tensor<1024xi32>
  %e1 = tensor.empty() : tensor<1024xi32>
  %ids:2 = linalg.generic {indexing_maps = [affine_map<(d0) -> (d0)>, affine_map<(d0) -> (d0)>], iterator_types = ["parallel"]} outs(%e0, %e1 : tensor<1024xi32>, tensor<1024xi32>) {
  ^bb0(%o0: i32, %o1: i32):
    %i = linalg.index 0 : index
    %pos = arith.remui %i, %c128 : index
    %seq = arith.divui %i, %c128 : index
    %p = arith.index_cast %pos : index to i32
    %s = arith.index_cast %seq : index to i32
    linalg.yield %p, %s : i32, i32
  } -> (tensor<1024xi32>, tensor<1024xi32>)
  %batch = tensor.extract_slice %ids#1[0] [%n] [1] : tensor<1024xi32> to tensor<?xi32>
  %last = arith.subi %n, %c1 : index
  %id = tensor.extract %batch[%last] : tensor<?xi32>
  %idx = arith.index_cast %id : i32 to index
  %count = arith.addi %idx, %c1 : index
  return %count, %ids#0 : index, tensor<1024xi32>
}

// -----

// A kernel that reads a tensor (an input, or one captured in its body)
// keeps its extracts: the element is data, not a function of the index.
// CHECK-LABEL: func.func @data_dependent
// CHECK: tensor.extract %{{.*}}[%{{.*}}] : tensor<16xi32>
// CHECK: tensor.extract %{{.*}}[%{{.*}}] : tensor<16xi32>
func.func @data_dependent(%t: tensor<16xi32>, %k: index) -> (i32, i32) {
  %e = tensor.empty() : tensor<16xi32>
  %copy = linalg.generic {indexing_maps = [affine_map<(d0) -> (d0)>, affine_map<(d0) -> (d0)>], iterator_types = ["parallel"]} ins(%t : tensor<16xi32>) outs(%e : tensor<16xi32>) {
  ^bb0(%in: i32, %o: i32):
    linalg.yield %in : i32
  } -> tensor<16xi32>
  %gathered = linalg.generic {indexing_maps = [affine_map<(d0) -> (d0)>], iterator_types = ["parallel"]} outs(%e : tensor<16xi32>) {
  ^bb0(%o: i32):
    %i = linalg.index 0 : index
    %v = tensor.extract %t[%i] : tensor<16xi32>
    linalg.yield %v : i32
  } -> tensor<16xi32>
  %a = tensor.extract %copy[%k] : tensor<16xi32>
  %b = tensor.extract %gathered[%k] : tensor<16xi32>
  return %a, %b : i32, i32
}
