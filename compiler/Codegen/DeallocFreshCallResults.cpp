//===- DeallocFreshCallResults.cpp - Free fresh call results unchecked ---===//
//
// See Passes.td.
//
//===----------------------------------------------------------------------===//

#include "compiler/Codegen/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Bufferization/Transforms/BufferViewFlowAnalysis.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "mlir/Interfaces/ViewLikeInterface.h"
#include "llvm/ADT/BitVector.h"

namespace momac {
#define GEN_PASS_DEF_DEALLOCFRESHCALLRESULTS
#include "compiler/Codegen/Passes.h.inc"
} // namespace momac

using namespace mlir;

namespace {

bool isAllocation(Value value) {
  Operation *op = value.getDefiningOp();
  return op && hasEffect<MemoryEffects::Allocate>(op, value);
}

/// The buffers `value` may be, as far as the flow analysis traces it back:
/// allocations, arguments, results of calls and of ops it does not know.
llvm::SmallPtrSet<Value, 16> terminalBuffers(const BufferViewFlowAnalysis &flow,
                                             Value value) {
  llvm::SmallPtrSet<Value, 16> terminals;
  for (Value origin : flow.resolveReverse(value))
    if (isa<BaseMemRefType>(origin.getType()) &&
        flow.mayBeTerminalBuffer(origin))
      terminals.insert(origin);
  return terminals;
}

/// Which results of `func` are fresh: every buffer such a result may be is
/// allocated in `func` (never an argument, nothing the analysis cannot
/// trace), and no buffer of another memref result may be the same one.
/// Every memref result must be traceable so, or none is fresh: a result
/// the analysis cannot follow might be any of the others.
llvm::BitVector freshResults(func::FuncOp func) {
  llvm::BitVector fresh(func.getNumResults(), false);
  if (func.isExternal())
    return fresh;
  BufferViewFlowAnalysis flow(func);
  bool first = true;
  for (Block &block : func.getBody()) {
    auto ret = dyn_cast<func::ReturnOp>(block.getTerminator());
    if (!ret)
      continue;
    SmallVector<std::optional<llvm::SmallPtrSet<Value, 16>>> terminals;
    for (Value operand : ret.getOperands()) {
      if (!isa<BaseMemRefType>(operand.getType())) {
        terminals.push_back(std::nullopt);
        continue;
      }
      // A buffer traced back to nothing (a region result no terminator
      // yields) is not known to be an allocation either.
      terminals.push_back(terminalBuffers(flow, operand));
      if (terminals.back()->empty() ||
          !llvm::all_of(*terminals.back(), isAllocation))
        return llvm::BitVector(func.getNumResults(), false);
    }
    llvm::BitVector here(func.getNumResults(), false);
    for (auto [i, mine] : llvm::enumerate(terminals)) {
      if (!mine)
        continue;
      here[i] = llvm::all_of(llvm::enumerate(terminals), [&](auto other) {
        return other.index() == i || !other.value() ||
               llvm::none_of(*mine, [&](Value buffer) {
                 return other.value()->contains(buffer);
               });
      });
    }
    if (first)
      fresh = here;
    else
      fresh &= here;
    first = false;
  }
  return fresh;
}

/// Which results of the functions called so far are fresh.
class FreshResults {
public:
  /// True if `value` is a result that its callee returns fresh.
  bool isFresh(Value value) {
    auto call = value.getDefiningOp<func::CallOp>();
    if (!call)
      return false;
    auto callee = symbols.lookupNearestSymbolFrom<func::FuncOp>(
        call, call.getCalleeAttr().getAttr());
    if (!callee)
      return false;
    auto it = fresh.find(callee);
    if (it == fresh.end())
      it = fresh.try_emplace(callee, freshResults(callee)).first;
    return it->second.test(cast<OpResult>(value).getResultNumber());
  }

  /// The fresh call result that `value` views, if any.
  Value viewedFreshResult(Value value) {
    while (auto view = value.getDefiningOp<ViewLikeOpInterface>()) {
      if (value != view.getViewDest())
        break;
      value = view.getViewSource();
    }
    return isFresh(value) ? value : nullptr;
  }

private:
  SymbolTableCollection symbols;
  llvm::DenseMap<Operation *, llvm::BitVector> fresh;
};

/// How the buffers of a function derive from each other
/// (BufferViewFlowAnalysis: views, branches, and a call's results from each
/// of its operands, as far as the analysis knows), except that a fresh call
/// result derives from nothing: its allocation is its own.
class BufferFlow {
public:
  BufferFlow(func::FuncOp func, FreshResults &fresh)
      : flow(func), fresh(fresh) {
    // What the analysis cannot trace, and everything derived from it.
    SmallVector<Value> worklist;
    auto seed = [&](Value value) {
      if (isa<BaseMemRefType>(value.getType()) &&
          flow.mayBeTerminalBuffer(value) && !isAllocation(value) &&
          !isFunctionArgument(value) &&
          !value.getDefiningOp<CallOpInterface>() &&
          opaque.insert(value).second)
        worklist.push_back(value);
    };
    func.walk([&](Block *block) {
      for (Value argument : block->getArguments())
        seed(argument);
      for (Operation &op : *block)
        for (Value result : op.getResults())
          seed(result);
    });
    addDerived(worklist, opaque);
  }

  /// The buffers that may be `buffer`, a fresh call result, or a part of
  /// it: what derives from it.
  llvm::DenseSet<Value> derivedFrom(Value buffer) const {
    llvm::DenseSet<Value> derived = {buffer};
    addDerived({buffer}, derived);
    return derived;
  }

  /// True if an op the analysis does not know is among where `value`
  /// comes from: it hides which buffers that op's result may be. The
  /// known origins are allocations, arguments and calls' results.
  bool isOpaque(Value value) const { return opaque.contains(value); }

private:
  /// Adds to `reached` what derives from `worklist`'s buffers, except
  /// fresh call results.
  void addDerived(SmallVector<Value> worklist,
                  llvm::DenseSet<Value> &reached) const {
    while (!worklist.empty()) {
      auto it = flow.find(worklist.pop_back_val());
      if (it == flow.end())
        continue;
      for (Value value : it->second)
        if (!fresh.isFresh(value) && reached.insert(value).second)
          worklist.push_back(value);
    }
  }

  static bool isFunctionArgument(Value value) {
    auto arg = dyn_cast<BlockArgument>(value);
    return arg && arg.getOwner()->isEntryBlock() &&
           isa<FunctionOpInterface>(arg.getOwner()->getParentOp());
  }

  BufferViewFlowAnalysis flow;
  FreshResults &fresh;
  llvm::DenseSet<Value> opaque;
};

struct DeallocFreshCallResultsPass
    : momac::impl::DeallocFreshCallResultsBase<DeallocFreshCallResultsPass> {
  void runOnOperation() override {
    FreshResults fresh;
    unsigned split = 0;
    for (auto func : getOperation().getOps<func::FuncOp>()) {
      SmallVector<bufferization::DeallocOp> deallocs;
      func.walk([&](bufferization::DeallocOp op) {
        if (op.getMemrefs().size() > 1)
          deallocs.push_back(op);
      });
      if (deallocs.empty())
        continue;
      BufferFlow flow(func, fresh);
      for (bufferization::DeallocOp dealloc : deallocs)
        split += splitFreshCallResults(dealloc, flow, fresh);
    }
    numSplit += split;
  }

  /// Gives each fresh call result that no other buffer of `dealloc` may
  /// hold a deallocation of its own, with the same retained buffers;
  /// returns how many.
  unsigned splitFreshCallResults(bufferization::DeallocOp dealloc,
                                 const BufferFlow &flow, FreshResults &fresh) {
    ValueRange memrefs = dealloc.getMemrefs();
    // How often each buffer is in the deallocation, and how many of them
    // hide where they come from: each memref is checked against what
    // derives from it (a few views), not against every other memref, which
    // was quadratic in an entry point's last deallocation (one per layer).
    llvm::SmallDenseMap<Value, unsigned> occurrences;
    unsigned opaqueCount = 0;
    for (Value memref : memrefs) {
      ++occurrences[memref];
      opaqueCount += flow.isOpaque(memref);
    }
    SmallVector<unsigned> alone, rest;
    for (auto [i, memref] : llvm::enumerate(memrefs)) {
      // No other buffer of the deallocation may be it: none derives from
      // it, and none comes from an op that hides where it comes from.
      Value result = fresh.viewedFreshResult(memref);
      bool separate = false;
      if (result && opaqueCount == unsigned(flow.isOpaque(memref))) {
        separate = llvm::none_of(flow.derivedFrom(result), [&](Value derived) {
          auto it = occurrences.find(derived);
          return it != occurrences.end() &&
                 it->second > unsigned(derived == memref);
        });
      }
      (separate ? alone : rest).push_back(i);
    }
    if (alone.empty())
      return 0;

    OpBuilder builder(dealloc);
    Location loc = dealloc.getLoc();
    ValueRange conditions = dealloc.getConditions();
    ValueRange retained = dealloc.getRetained();
    // A retained buffer is still owned if any of the deallocations that
    // replace this one says so.
    SmallVector<Value> owned(retained.size());
    auto deallocate = [&](ArrayRef<unsigned> indices) {
      SmallVector<Value> someMemrefs, someConditions;
      for (unsigned i : indices) {
        someMemrefs.push_back(memrefs[i]);
        someConditions.push_back(conditions[i]);
      }
      auto part = bufferization::DeallocOp::create(builder, loc, someMemrefs,
                                                   someConditions, retained);
      for (auto [i, updated] : llvm::enumerate(part.getUpdatedConditions()))
        owned[i] = owned[i]
                       ? arith::OrIOp::create(builder, loc, owned[i], updated)
                             .getResult()
                       : updated;
    };
    for (unsigned i : alone)
      deallocate(i);
    if (!rest.empty())
      deallocate(rest);
    dealloc.replaceAllUsesWith(owned);
    dealloc.erase();
    return alone.size();
  }
};

} // namespace
