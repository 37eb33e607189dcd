//===- KernelIteration.cpp - One iteration of a kernel's body -------------===//

#include "compiler/Codegen/KernelIteration.h"

#include "mlir/Dialect/Affine/IR/AffineOps.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/IR/IRMapping.h"

using namespace mlir;

SmallVector<Value> momac::elementIndices(OpBuilder &b, Location loc,
                                         AffineMap map, ValueRange ivs) {
  SmallVector<Value> indices;
  for (AffineExpr result : map.getResults()) {
    if (auto dim = dyn_cast<AffineDimExpr>(result)) {
      indices.push_back(ivs[dim.getPosition()]);
      continue;
    }
    indices.push_back(affine::AffineApplyOp::create(
        b, loc, AffineMap::get(map.getNumDims(), 0, result), ivs));
  }
  return indices;
}

SmallVector<Value> momac::emitKernelIteration(OpBuilder &b, Location loc,
                                              linalg::LinalgOp kernel,
                                              ValueRange ivs,
                                              ValueRange outputs) {
  IRMapping mapping;
  for (OpOperand *input : kernel.getDpsInputOperands()) {
    Value value = input->get();
    if (isa<MemRefType>(value.getType()))
      value = memref::LoadOp::create(
          b, loc, value,
          elementIndices(b, loc, kernel.getMatchingIndexingMap(input), ivs));
    mapping.map(kernel.getMatchingBlockArgument(input), value);
  }
  mapping.map(kernel.getRegionOutputArgs(), outputs);
  SmallVector<Value> yielded;
  for (Operation &op : *kernel.getBlock()) {
    if (auto index = dyn_cast<linalg::IndexOp>(op)) {
      mapping.map(index.getResult(), ivs[index.getDim()]);
      continue;
    }
    if (auto yield = dyn_cast<linalg::YieldOp>(op)) {
      for (Value value : yield.getValues())
        yielded.push_back(mapping.lookupOrDefault(value));
      continue;
    }
    b.clone(op, mapping);
  }
  return yielded;
}
