//===- OrderOnStepStream.cpp - A step's GPU work on one stream ------------===//
//
// See Passes.td. Each block of host code gets one chain of async tokens:
// `gpu.wait async` starts it (the lowering asks the runtime for a stream:
// the step's), every GPU op depends on the one before, and the function
// waits for its chain before it returns. The cloning of an op
// into its async form follows upstream `gpu-async-region`.
//
//===----------------------------------------------------------------------===//

#include "compiler/Target/CUDA/Passes.h"
#include "dialects/moma/IR/MomaDialect.h"

#include "mlir/IR/IRMapping.h"

namespace momac {
#define GEN_PASS_DEF_ORDERONSTEPSTREAM
#include "compiler/Target/CUDA/Passes.h.inc"
} // namespace momac

using namespace mlir;

namespace {

struct OrderOnStepStreamPass
    : momac::impl::OrderOnStepStreamBase<OrderOnStepStreamPass> {
  void runOnOperation() override {
    func::FuncOp func = getOperation();
    if (func.isExternal())
      return;
    SmallVector<Block *> blocks;
    func.walk([&](Block *block) {
      if (!block->getParentOp()->getParentOfType<gpu::LaunchOp>() &&
          !isa<gpu::LaunchOp>(block->getParentOp()))
        blocks.push_back(block);
    });
    for (Block *block : blocks)
      orderBlock(*block);
  }

  void orderBlock(Block &block) {
    OpBuilder builder(&getContext());
    Type tokenType = gpu::AsyncTokenType::get(&getContext());
    Value token;
    for (Operation &op : llvm::make_early_inc_range(block)) {
      auto async = dyn_cast<gpu::AsyncOpInterface>(op);
      if (isa<gpu::WaitOp>(op) || !async) {
        // The function's results are complete when it returns. A layer
        // function's caller queues its next work on the same stream, and
        // waits where it returns itself.
        auto func = dyn_cast<func::FuncOp>(block.getParentOp());
        if (token && op.hasTrait<OpTrait::ReturnLike>() && func &&
            !func->hasAttr(mlir::moma::kLayerFunctionAttrName)) {
          builder.setInsertionPoint(&op);
          gpu::WaitOp::create(builder, op.getLoc(), Type(), ValueRange{token});
          token = nullptr;
        }
        continue;
      }
      if (async.getAsyncToken())
        continue;
      if (!token) {
        builder.setInsertionPoint(&op);
        token = gpu::WaitOp::create(builder, op.getLoc(), tokenType,
                                    ValueRange{})
                    .getAsyncToken();
      }
      async.addAsyncDependency(token);
      // The async clone: the same op with a token result after its others.
      SmallVector<Type> resultTypes(op.getResultTypes());
      resultTypes.push_back(tokenType);
      builder.setInsertionPoint(&op);
      Operation *clone = Operation::create(
          op.getLoc(), op.getName(), resultTypes, op.getOperands(),
          op.getDiscardableAttrDictionary(), op.getPropertiesStorage(),
          op.getSuccessors(), op.getNumRegions());
      for (auto [from, to] : llvm::zip(op.getRegions(), clone->getRegions()))
        to.takeBody(from);
      builder.insert(clone);
      op.replaceAllUsesWith(clone->getResults().drop_back());
      op.erase();
      token = clone->getResults().back();
    }
  }
};

} // namespace
