//===- StepStatistics.cpp - What a compiled step does, counted ------------===//

#include "compiler/Pipelines/StepStatistics.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Interfaces/ViewLikeInterface.h"

using namespace mlir;
using namespace momac;

KernelCounts &KernelCounts::operator+=(const KernelCounts &other) {
  kernels += other.kernels;
  gemms += other.gemms;
  topK += other.topK;
  copies += other.copies;
  bytes += other.bytes;
  return *this;
}

namespace {

/// The model part named by an op's location: the front end names every op
/// after its module ("layers.3.attention", "output", ...).
std::string partOf(Location loc) {
  std::string part = "model";
  loc->walk([&](Location inner) {
    auto named = dyn_cast<NameLoc>(inner);
    if (!named || !named.getName().getValue().starts_with("layers."))
      return WalkResult::advance();
    StringRef name = named.getName().getValue();
    size_t end = name.find('.', /*From=*/7);
    part = name.substr(0, end).str();
    return WalkResult::interrupt();
  });
  return part;
}

double estimatedBytes(Type type, int64_t tokens) {
  auto memref = dyn_cast<MemRefType>(type);
  if (!memref)
    return 0;
  double elements = 1, leading = 1;
  for (int64_t size : memref.getShape()) {
    if (ShapedType::isDynamic(size)) {
      elements *= std::max(1.0, double(tokens) / leading);
    } else {
      elements *= double(size);
      leading *= double(size);
    }
  }
  return elements * double(memref.getElementTypeBitWidth()) / 8;
}

/// The buffers a kernel touches: its memref operands, and for a loop the
/// memrefs defined outside it that its body uses.
double kernelBytes(Operation *op, int64_t tokens) {
  llvm::SetVector<Value> buffers;
  for (Value operand : op->getOperands())
    if (isa<MemRefType>(operand.getType()))
      buffers.insert(operand);
  op->walk([&](Operation *inner) {
    for (Value operand : inner->getOperands())
      if (isa<MemRefType>(operand.getType()) &&
          !op->isAncestor(operand.getParentRegion()->getParentOp()))
        buffers.insert(operand);
  });
  double bytes = 0;
  for (Value buffer : buffers) {
    // A view counts as the data it covers.
    bytes += estimatedBytes(buffer.getType(), tokens);
  }
  return bytes;
}

bool isTopKCall(Operation *op) {
  auto call = dyn_cast<func::CallOp>(op);
  return call && call.getCallee() == "momart_select_smallest_i64";
}

/// Counts `op` and what it contains into `counts`.
void countOp(Operation *op, int64_t tokens, KernelCounts &counts) {
  if (isa<scf::ForallOp, scf::ParallelOp>(op)) {
    counts.kernels += 1;
    counts.bytes += kernelBytes(op, tokens);
    // GEMMs and selections inside a loop (per sequence, per expert) are
    // library calls of their own.
    op->walk([&](Operation *inner) {
      if (auto linalgOp = dyn_cast<linalg::LinalgOp>(inner))
        counts.gemms += linalg::isaContractionOpInterface(linalgOp);
      counts.topK += isTopKCall(inner);
    });
    return;
  }
  if (auto linalgOp = dyn_cast<linalg::LinalgOp>(op)) {
    if (linalg::isaContractionOpInterface(linalgOp))
      counts.gemms += 1;
    else
      counts.kernels += 1;
    counts.bytes += kernelBytes(op, tokens);
    return;
  }
  if (isa<memref::CopyOp>(op)) {
    counts.copies += 1;
    counts.bytes += 2 * estimatedBytes(op->getOperand(0).getType(), tokens);
    return;
  }
  if (isTopKCall(op)) {
    counts.topK += 1;
    return;
  }
  // Sequential control flow (routing loops, conditionals): what it holds.
  for (Region &region : op->getRegions())
    for (Operation &inner : region.getOps())
      countOp(&inner, tokens, counts);
}

/// Replays the allocations and deallocations of `ops` in program order
/// (into sequential control flow, not into kernels, whose per-iteration
/// scratch is small), tracking the live bytes and their peak.
void replayAllocations(Block &ops, int64_t tokens,
                       llvm::DenseMap<Value, double> &live, double &current,
                       double &peak) {
  for (Operation &op : ops) {
    if (isa<memref::AllocOp, memref::AllocaOp>(op)) {
      double bytes = estimatedBytes(op.getResult(0).getType(), tokens);
      live[op.getResult(0)] = bytes;
      current += bytes;
      peak = std::max(peak, current);
      continue;
    }
    if (auto dealloc = dyn_cast<memref::DeallocOp>(op)) {
      // Deallocation may free a view of the allocation, by its base.
      Value buffer = dealloc.getMemref();
      while (Operation *def = buffer.getDefiningOp()) {
        if (live.count(buffer) ||
            !isa<ViewLikeOpInterface>(def))
          break;
        buffer = cast<ViewLikeOpInterface>(def).getViewSource();
      }
      if (auto it = live.find(buffer); it != live.end()) {
        current -= it->second;
        live.erase(it);
      }
      continue;
    }
    if (isa<scf::ForallOp, scf::ParallelOp>(op))
      continue;
    for (Region &region : op.getRegions())
      for (Block &block : region)
        replayAllocations(block, tokens, live, current, peak);
  }
}

} // namespace

std::map<std::string, FunctionStatistics>
momac::collectStepStatistics(ModuleOp module, int64_t tokens) {
  std::map<std::string, FunctionStatistics> result;
  for (auto func : module.getOps<func::FuncOp>()) {
    if (func.isPrivate() || func.isExternal())
      continue;
    FunctionStatistics &stats = result[func.getName().str()];
    for (Operation &op : func.getBody().getOps()) {
      KernelCounts counts;
      countOp(&op, tokens, counts);
      stats.total += counts;
      stats.byPart[partOf(op.getLoc())] += counts;
    }
    llvm::DenseMap<Value, double> live;
    double current = 0;
    replayAllocations(func.getBody().front(), tokens, live, current,
                      stats.peakTemporaryBytes);
  }
  return result;
}
