//===- ReuseModalityPartition.cpp - one partition per token set -----------===//
//
// Replaces a moma.modality_partition by an earlier, dominating one over the
// same tokens and groups. See Passes.td for the rationale.
//
//===----------------------------------------------------------------------===//

#include "dialects/moma/IR/MomaOps.h"
#include "dialects/moma/Transforms/Passes.h"

#include "mlir/IR/Dominance.h"
#include "mlir/IR/OperationSupport.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "llvm/ADT/DenseMap.h"

namespace mlir::moma {
#define GEN_PASS_DEF_MOMAREUSEMODALITYPARTITION
#include "dialects/moma/Transforms/Passes.h.inc"
} // namespace mlir::moma

using namespace mlir;
using namespace mlir::moma;

namespace {

/// Decides whether two values hold the same tokens: the same value, or the
/// same result of equivalent side-effect-free ops on the same tokens.
/// Answers are memoized, so deep chains stay linear.
class TokenEquivalence {
public:
  bool equivalent(Value a, Value b) {
    if (a == b)
      return true;
    if (a.getType() != b.getType())
      return false;
    auto resultA = dyn_cast<OpResult>(a), resultB = dyn_cast<OpResult>(b);
    if (!resultA || !resultB ||
        resultA.getResultNumber() != resultB.getResultNumber())
      return false;
    Operation *opA = resultA.getOwner(), *opB = resultB.getOwner();
    if (!isMemoryEffectFree(opA) || !isMemoryEffectFree(opB) ||
        opA->getNumRegions() != 0 || opB->getNumRegions() != 0)
      return false;
    auto key = std::make_pair(opA, opB);
    if (auto it = memo.find(key); it != memo.end())
      return it->second;
    memo[key] = false; // Guards against cycles through graph regions.
    bool same = OperationEquivalence::isEquivalentTo(
        opA, opB, [&](Value x, Value y) { return success(equivalent(x, y)); },
        /*markEquivalent=*/nullptr, OperationEquivalence::IgnoreLocations);
    memo[key] = same;
    return same;
  }

private:
  llvm::DenseMap<std::pair<Operation *, Operation *>, bool> memo;
};

struct ReuseModalityPartitionPass
    : public mlir::moma::impl::MomaReuseModalityPartitionBase<
          ReuseModalityPartitionPass> {
  void runOnOperation() override {
    DominanceInfo &dominance = getAnalysis<DominanceInfo>();
    TokenEquivalence tokens;
    SmallVector<ModalityPartitionOp> kept;
    SmallVector<ModalityPartitionOp> redundant;

    getOperation().walk([&](ModalityPartitionOp op) {
      for (ModalityPartitionOp earlier : kept) {
        if (earlier.getGroupNames() != op.getGroupNames() ||
            earlier.getGroupRanges() != op.getGroupRanges() ||
            earlier.getResultTypes() != op.getResultTypes() ||
            !dominance.properlyDominates(earlier.getOperation(),
                                         op.getOperation()) ||
            !tokens.equivalent(earlier.getTokenIds(), op.getTokenIds()))
          continue;
        op.replaceAllUsesWith(earlier.getResults());
        redundant.push_back(op);
        return;
      }
      kept.push_back(op);
    });

    for (ModalityPartitionOp op : redundant)
      op.erase();
    numReused += redundant.size();
    if (redundant.empty())
      markAllAnalysesPreserved();
  }
};

} // namespace
