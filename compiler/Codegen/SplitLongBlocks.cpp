//===- SplitLongBlocks.cpp - Long blocks as a chain of short ones ---------===//
//
// See Passes.td.
//
//===----------------------------------------------------------------------===//

#include "compiler/Codegen/Passes.h"

#include "mlir/Dialect/ControlFlow/IR/ControlFlowOps.h"

namespace momac {
#define GEN_PASS_DEF_SPLITLONGBLOCKS
#include "compiler/Codegen/Passes.h.inc"
} // namespace momac

using namespace mlir;

namespace {

/// Cuts `block` before every `maxOperations`-th operation after its last
/// stack allocation, from the back, so that each split moves one piece.
void splitLongBlock(Block *block, unsigned maxOperations) {
  SmallVector<Operation *> operations;
  for (Operation &op : *block) {
    if (isa<LLVM::AllocaOp>(op))
      operations.clear();
    else
      operations.push_back(&op);
  }
  SmallVector<Operation *> cuts;
  // The terminator (the last operation) stays with the piece before it.
  for (size_t index = maxOperations; index + 1 < operations.size();
       index += maxOperations)
    cuts.push_back(operations[index]);
  OpBuilder builder(block->getParentOp()->getContext());
  for (Operation *cut : llvm::reverse(cuts)) {
    Block *before = cut->getBlock();
    Block *after = before->splitBlock(cut);
    builder.setInsertionPointToEnd(before);
    cf::BranchOp::create(builder, cut->getLoc(), after);
  }
}

struct SplitLongBlocksPass
    : momac::impl::SplitLongBlocksBase<SplitLongBlocksPass> {
  using SplitLongBlocksBase::SplitLongBlocksBase;

  void runOnOperation() override {
    if (maxOperations == 0) {
      getOperation().emitError("max-operations must be at least 1");
      return signalPassFailure();
    }
    SmallVector<Block *> blocks;
    for (Block &block : getOperation().getBody())
      blocks.push_back(&block);
    for (Block *block : blocks)
      splitLongBlock(block, maxOperations);
  }
};

} // namespace
