//===- OutlineLayers.cpp - Each distinct layer compiled once --------------===//
//
// See Passes.td. A run is a stretch of an entry point's ops that all name
// one layer in their location ("layers.3.attention"); constants, empty
// tensors and fills (the "free" ops, which CSE shares across layers and
// which the outlined functions clone instead of taking) neither start nor
// end one.
//
//===----------------------------------------------------------------------===//

#include "compiler/Codegen/Passes.h"

#include "dialects/moma/IR/MomaDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "mlir/Transforms/RegionUtils.h"

#include "llvm/ADT/StringMap.h"

namespace momac {
#define GEN_PASS_DEF_OUTLINELAYERS
#include "compiler/Codegen/Passes.h.inc"
} // namespace momac

using namespace mlir;

namespace {

/// Ops that cost nothing to repeat and that CSE shares between layers:
/// an outlined function clones the ones it uses.
bool isFree(Operation *op) {
  if (op->hasTrait<OpTrait::ConstantLike>() || isa<tensor::EmptyOp>(op))
    return true;
  auto fill = dyn_cast<linalg::FillOp>(op);
  return fill && fill.hasPureTensorSemantics();
}

/// Pure scalar arithmetic (integers and floats, and indices when
/// `withIndices`), which an outlined function and its caller can each
/// recompute from the tensors it comes from rather than pass the scalar: a
/// target that keeps the step's data on a device (CUDA) would otherwise
/// read each such scalar back to pass it.
bool isScalarArithmetic(Operation *op, bool withIndices) {
  return op->getNumRegions() == 0 && op->getNumResults() > 0 &&
         isMemoryEffectFree(op) &&
         llvm::all_of(op->getResultTypes(), [&](Type type) {
           return withIndices ? type.isIntOrIndexOrFloat()
                              : type.isIntOrFloat();
         });
}

/// The values `op` reads: its operands, then what its regions use from
/// above, in first-use order.
SetVector<Value> valuesReadBy(Operation *op) {
  SetVector<Value> values(op->getOperands().begin(), op->getOperands().end());
  getUsedValuesDefinedAbove(op->getRegions(), values);
  return values;
}

/// One phase of one layer in an entry point: its forward, the forward that
/// a gradient recomputes, its backward, its optimizer update.
struct Run {
  int64_t layer;
  unsigned phase; // the how-manieth run of this layer in the function
  SmallVector<Operation *> ops;
};

SmallVector<Run> findRuns(Block &body) {
  SmallVector<Run> runs;
  llvm::DenseMap<int64_t, unsigned> phases;
  bool open = false;
  for (Operation &op : body.without_terminator()) {
    if (isFree(&op))
      continue;
    std::optional<int64_t> layer = mlir::moma::layerOfLocation(op.getLoc());
    if (!layer) {
      open = false;
      continue;
    }
    if (!open || runs.back().layer != *layer) {
      runs.push_back({*layer, phases[*layer]++, {}});
      open = true;
    }
    runs.back().ops.push_back(&op);
  }
  return runs;
}

class FunctionOutliner {
public:
  FunctionOutliner(func::FuncOp entry, SymbolTable &symbols)
      : entry(entry), body(entry.getBody().front()), symbols(symbols) {}

  /// Outlines every run of the entry point; the new functions and their
  /// calls are appended to `outlined`.
  void run(SmallVectorImpl<std::pair<func::FuncOp, func::CallOp>> &outlined);

private:
  Operation *topLevel(Operation *op) { return body.findAncestorOpInBlock(*op); }
  void collectUsers(Value value, SmallVectorImpl<Operation *> &users,
                    llvm::DenseSet<Operation *> &visited);
  void hoistSharedComputations(Run &run);
  void moveBeforeWithOperands(Operation *op, Operation *before,
                              llvm::DenseSet<Operation *> &placed);
  std::pair<func::FuncOp, func::CallOp> outline(Run &run);
  bool slicesSharedArgument(Operation *op);
  Value indexConstant(int64_t value);
  void placeFreeOpsBeforeUsers();

  func::FuncOp entry;
  Block &body;
  SymbolTable &symbols;
  SmallVector<Run> runs;
  llvm::DenseMap<Operation *, unsigned> runOf;
  llvm::DenseMap<Operation *, size_t> position;
  /// The entry point's arguments by their moma.param name.
  llvm::StringMap<BlockArgument> argumentByName;
  /// The entry point's arguments that runs of several layers read.
  llvm::DenseSet<Value> sharedArguments;
  llvm::DenseMap<int64_t, Value> indexConstants;
};

/// An index constant at the start of the entry point.
Value FunctionOutliner::indexConstant(int64_t value) {
  Value &constant = indexConstants[value];
  if (!constant) {
    OpBuilder b = OpBuilder::atBlockBegin(&body);
    constant = arith::ConstantIndexOp::create(b, entry.getLoc(), value);
  }
  return constant;
}

/// The non-free top-level ops that use `value`, directly or through free
/// ops.
void FunctionOutliner::collectUsers(Value value,
                                    SmallVectorImpl<Operation *> &users,
                                    llvm::DenseSet<Operation *> &visited) {
  for (Operation *user : value.getUsers()) {
    Operation *top = topLevel(user);
    if (!top)
      continue;
    if (!isFree(top)) {
      users.push_back(top);
      continue;
    }
    if (visited.insert(top).second)
      for (Value result : top->getResults())
        collectUsers(result, users, visited);
  }
}

/// Moves `op` before `before`, with the free ops it reads that are not
/// there yet: those after `before` in the original order and not `placed`
/// (moved) before it already.
void FunctionOutliner::moveBeforeWithOperands(
    Operation *op, Operation *before, llvm::DenseSet<Operation *> &placed) {
  op->moveBefore(before);
  placed.insert(op);
  for (Value value : valuesReadBy(op)) {
    Operation *def = value.getDefiningOp();
    Operation *top = def ? topLevel(def) : nullptr;
    if (!top || placed.contains(top) ||
        position.lookup(top) < position.lookup(before))
      continue;
    moveBeforeWithOperands(top, op, placed);
  }
}

/// CSE leaves what all layers compute alike (the RoPE tables of the
/// positions, a modality partition that -moma-reuse-modality-partition
/// shares) in the first layer that needs it, read by the later ones. Such a
/// computation (pure, and reading nothing the run computes otherwise) moves
/// in front of the run, so that it stays computed once, in the entry
/// point, and the first layer of a kind is outlined as the others are.
void FunctionOutliner::hoistSharedComputations(Run &run) {
  llvm::DenseSet<Operation *> inRun(run.ops.begin(), run.ops.end());
  llvm::DenseSet<Operation *> invariant;
  // What every layer reads alike: the entry point's arguments other than a
  // layer's parameters (tokens, positions, noise), what the entry point
  // computes outside the runs, and what is computed from those only. What
  // another run computes (a layer's output, the gradient flowing back
  // from the next layer) is not.
  std::function<bool(Value)> isInvariant = [&](Value value) {
    if (auto argument = dyn_cast<BlockArgument>(value)) {
      if (argument.getOwner() != &body)
        return false;
      auto name = entry.getArgAttrOfType<StringAttr>(
          argument.getArgNumber(), mlir::moma::kParamAttrName);
      return !name || !name.getValue().starts_with("layers.");
    }
    Operation *top = topLevel(value.getDefiningOp());
    if (!top)
      return false;
    if (inRun.contains(top))
      return invariant.contains(top);
    if (isFree(top))
      return llvm::all_of(top->getOperands(), isInvariant);
    return !runOf.contains(top);
  };
  for (Operation *op : run.ops)
    if (isMemoryEffectFree(op) && llvm::all_of(valuesReadBy(op), isInvariant))
      invariant.insert(op);
  if (invariant.empty())
    return;

  // What another layer reads, and what that is computed from.
  llvm::DenseSet<Operation *> hoisted;
  SmallVector<Operation *> worklist;
  for (Operation *op : run.ops) {
    if (!invariant.contains(op))
      continue;
    SmallVector<Operation *> users;
    llvm::DenseSet<Operation *> visited;
    for (Value result : op->getResults())
      collectUsers(result, users, visited);
    if (llvm::any_of(users, [&](Operation *user) {
          auto it = runOf.find(user);
          return it != runOf.end() && runs[it->second].layer != run.layer;
        }) && hoisted.insert(op).second)
      worklist.push_back(op);
  }
  while (!worklist.empty()) {
    Operation *op = worklist.pop_back_val();
    std::function<void(Value)> require = [&](Value value) {
      Operation *def = value.getDefiningOp();
      Operation *top = def ? topLevel(def) : nullptr;
      if (!top)
        return;
      if (inRun.contains(top)) {
        if (hoisted.insert(top).second)
          worklist.push_back(top);
      } else if (isFree(top)) {
        for (Value operand : top->getOperands())
          require(operand);
      }
    };
    for (Value value : valuesReadBy(op))
      require(value);
  }
  if (hoisted.empty())
    return;

  auto stays = llvm::find_if(run.ops,
                             [&](Operation *op) { return !hoisted.contains(op); });
  if (stays == run.ops.end()) {
    run.ops.clear();
    return;
  }
  Operation *before = *stays;
  llvm::DenseSet<Operation *> placed;
  for (Operation *op : run.ops) {
    if (!hoisted.contains(op))
      continue;
    if (position.lookup(op) > position.lookup(before))
      moveBeforeWithOperands(op, before, placed);
    placed.insert(op);
  }
  llvm::erase_if(run.ops, [&](Operation *op) { return hoisted.contains(op); });
}

void FunctionOutliner::run(
    SmallVectorImpl<std::pair<func::FuncOp, func::CallOp>> &outlined) {
  runs = findRuns(body);
  for (auto [index, op] : llvm::enumerate(body))
    position[&op] = index;
  for (auto [index, run] : llvm::enumerate(runs))
    for (Operation *op : run.ops)
      runOf[op] = index;
  for (BlockArgument argument : body.getArguments())
    if (auto name = entry.getArgAttrOfType<StringAttr>(
            argument.getArgNumber(), mlir::moma::kParamAttrName))
      argumentByName[name.getValue()] = argument;
  for (BlockArgument argument : body.getArguments()) {
    SmallVector<Operation *> users;
    llvm::DenseSet<Operation *> visited;
    collectUsers(argument, users, visited);
    std::optional<int64_t> first;
    for (Operation *user : users) {
      auto it = runOf.find(user);
      if (it == runOf.end())
        continue;
      int64_t layer = runs[it->second].layer;
      if (first && *first != layer) {
        sharedArguments.insert(argument);
        break;
      }
      first = layer;
    }
  }
  for (Run &run : runs)
    hoistSharedComputations(run);
  for (Run &run : runs)
    if (!run.ops.empty())
      outlined.push_back(outline(run));
  placeFreeOpsBeforeUsers();
  // The free ops that only the outlined runs used (each function has its
  // own clones now).
  for (Operation &op : llvm::make_early_inc_range(llvm::reverse(body)))
    if (isFree(&op) && op.use_empty())
      op.erase();
}

/// The moves above keep each run's ops in order but may leave a free op
/// (an empty tensor, a fill) after a user that stayed in the entry point.
/// Free ops are pure: each one that follows a user moves, with the free ops
/// it reads, in front of that user.
void FunctionOutliner::placeFreeOpsBeforeUsers() {
  llvm::DenseSet<Operation *> seen;
  std::function<void(Operation *, Operation *)> place =
      [&](Operation *user, Operation *at) {
        for (Value value : valuesReadBy(user)) {
          Operation *def = value.getDefiningOp();
          Operation *top = def ? topLevel(def) : nullptr;
          if (!top || seen.contains(top) || !isFree(top))
            continue;
          top->moveBefore(at);
          seen.insert(top);
          place(top, top);
        }
      };
  for (Operation &op : llvm::make_early_inc_range(body)) {
    place(&op, &op);
    seen.insert(&op);
  }
}

/// A slice of an argument of the entry point that several layers read (a
/// layer's rows of the router noise) reads it at offsets that differ from
/// layer to layer: they are passed in, so that the layers still share one
/// function.
bool FunctionOutliner::slicesSharedArgument(Operation *op) {
  auto slice = dyn_cast<tensor::ExtractSliceOp>(op);
  auto source = slice ? dyn_cast<BlockArgument>(slice.getSource()) : nullptr;
  return source && sharedArguments.contains(source) &&
         llvm::any_of(slice.getStaticOffsets(), [](int64_t offset) {
           return !ShapedType::isDynamic(offset);
         });
}

std::pair<func::FuncOp, func::CallOp> FunctionOutliner::outline(Run &run) {
  MLIRContext *context = entry.getContext();
  Location loc = run.ops.front()->getLoc();
  llvm::DenseSet<Operation *> inRun(run.ops.begin(), run.ops.end());

  // The results the run writes into the entry point's out-parameters are
  // written there by the function (the kernels that compute them can then
  // write them in place); scalars (losses) stay results.
  SmallVector<bufferization::MaterializeInDestinationOp> writes;
  for (Operation *op : run.ops)
    for (Value result : op->getResults())
      for (Operation *user : result.getUsers()) {
        auto write = dyn_cast<bufferization::MaterializeInDestinationOp>(user);
        if (!write || write->getBlock() != &body)
          continue;
        auto dest = dyn_cast<BlockArgument>(write.getDest());
        auto type = dyn_cast<RankedTensorType>(write.getSource().getType());
        if (dest && dest.getOwner() == &body &&
            isa<MemRefType>(dest.getType()) && type && type.getRank() > 0)
          writes.push_back(write);
      }
  // In the entry point's order, as the function writes them. (Positions
  // from before any outlining: asking the block would renumber it after
  // every call inserted, quadratic in the entry point's length.)
  llvm::sort(writes, [&](auto a, auto b) {
    return position.lookup(a) < position.lookup(b);
  });
  writes.erase(std::unique(writes.begin(), writes.end()), writes.end());
  llvm::DenseSet<Operation *> pulledIn;
  for (auto write : writes)
    pulledIn.insert(write);

  OpBuilder b(context);
  b.setInsertionPointToEnd(entry->getBlock());
  auto callee = func::FuncOp::create(b, loc,
                                     (entry.getSymName() + "_layers_" +
                                      Twine(run.layer) + "_" + Twine(run.phase))
                                         .str(),
                                     FunctionType::get(context, {}, {}));
  callee.setPrivate();
  callee->setAttr(mlir::moma::kLayerFunctionAttrName, UnitAttr::get(context));
  symbols.insert(callee);
  Block *calleeBody = callee.addEntryBlock();
  b.setInsertionPointToStart(calleeBody);
  OpBuilder caller(run.ops.front());

  IRMapping mapping;
  SmallVector<Value> operands;
  auto addArgument = [&](Value outside) {
    BlockArgument argument =
        calleeBody->addArgument(outside.getType(), outside.getLoc());
    operands.push_back(outside);
    mapping.map(outside, argument);
    return argument;
  };
  // A host scalar argument (batch_rows) is read where the host needs it;
  // the callee takes the value read.
  auto readsHostScalar = [&](Operation *op) {
    return llvm::any_of(op->getOperands(), [&](Value operand) {
      auto argument = dyn_cast<BlockArgument>(operand);
      return argument && argument.getOwner() == &body &&
             entry.getArgAttr(argument.getArgNumber(),
                              mlir::moma::kHostScalarAttrName);
    });
  };
  std::function<void(Value)> require = [&](Value value) {
    if (mapping.contains(value))
      return;
    Operation *def = value.getDefiningOp();
    // What the run reads is recomputed but for index arithmetic (token
    // counts): the host needs those counts anyway, to size buffers, and a
    // count one layer computes is passed to the next as a value, which
    // keeps the layers' functions alike. AdamW's clip factor, its test and
    // its bias corrections from the gradient norm are recomputed.
    if (def && def->getBlock() == &body &&
        (isFree(def) || (isScalarArithmetic(def, /*withIndices=*/false) &&
                         !readsHostScalar(def)))) {
      for (Value operand : def->getOperands())
        require(operand);
      b.clone(*def, mapping);
      return;
    }
    addArgument(value);
  };
  for (Operation *op : run.ops) {
    for (Value value : valuesReadBy(op))
      require(value);
    if (!slicesSharedArgument(op)) {
      b.clone(*op, mapping);
      continue;
    }
    auto slice = cast<tensor::ExtractSliceOp>(op);
    SmallVector<OpFoldResult> offsets;
    for (OpFoldResult offset : slice.getMixedOffsets()) {
      if (auto value = dyn_cast<Value>(offset)) {
        offsets.push_back(mapping.lookup(value));
        continue;
      }
      int64_t constant = cast<IntegerAttr>(cast<Attribute>(offset)).getInt();
      offsets.push_back(addArgument(indexConstant(constant)));
    }
    auto mapAll = [&](SmallVector<OpFoldResult> values) {
      for (OpFoldResult &value : values)
        if (auto dynamic = dyn_cast<Value>(value))
          value = mapping.lookup(dynamic);
      return values;
    };
    auto copy = tensor::ExtractSliceOp::create(
        b, slice.getLoc(), slice.getType(), mapping.lookup(slice.getSource()),
        offsets, mapAll(slice.getMixedSizes()), mapAll(slice.getMixedStrides()));
    mapping.map(slice.getResult(), copy.getResult());
  }
  for (auto write : writes) {
    require(write.getDest());
    b.clone(*write, mapping);
  }

  // What the run computes for the entry point. A scalar computed from the
  // run's tensors by pure arithmetic (a group's token count, as an index
  // and as the float a mean divides by) is not returned: the tensors are,
  // and the entry point recomputes the scalar after the call. A device
  // target would otherwise read each returned scalar back, even where only
  // device code uses it.
  auto usedOutside = [&](Value value) {
    return llvm::any_of(value.getUsers(), [&](Operation *user) {
      Operation *top = topLevel(user);
      return !inRun.contains(top) && !pulledIn.contains(top);
    });
  };
  // The run's ops are ops of `body`: being in the run says where they are.
  auto computedInRun = [&](Value value) {
    Operation *def = value.getDefiningOp();
    return def && inRun.contains(def);
  };
  llvm::DenseSet<Operation *> recomputed;
  std::function<bool(Operation *, SmallVectorImpl<Operation *> &)>
      recomputable = [&](Operation *op, SmallVectorImpl<Operation *> &chain) {
        if (!inRun.contains(op) ||
            !isScalarArithmetic(op, /*withIndices=*/true))
          return false;
        for (Value operand : op->getOperands()) {
          if (!computedInRun(operand) || isa<ShapedType>(operand.getType()))
            continue;
          if (!recomputable(operand.getDefiningOp(), chain))
            return false;
        }
        chain.push_back(op);
        return true;
      };
  SetVector<Value> results;
  for (Operation *op : run.ops) {
    SmallVector<Operation *> chain;
    if (llvm::any_of(op->getResults(), usedOutside) &&
        recomputable(op, chain)) {
      for (Operation *link : chain) {
        if (!recomputed.insert(link).second)
          continue;
        for (Value operand : link->getOperands())
          if (isa<ShapedType>(operand.getType()) && computedInRun(operand))
            results.insert(operand);
      }
      continue;
    }
    for (Value result : op->getResults())
      if (usedOutside(result))
        results.insert(result);
  }
  SmallVector<Value> returned = llvm::map_to_vector(
      results, [&](Value value) { return mapping.lookup(value); });
  func::ReturnOp::create(b, loc, returned);
  callee.setType(FunctionType::get(context, calleeBody->getArgumentTypes(),
                                   ValueRange(returned).getTypes()));

  // What the callee must know of its arguments: a host scalar stays one,
  // and an out-parameter written in place of an argument (AdamW's) is
  // still written in place of it (-moma-write-results-in-place).
  llvm::DenseMap<Value, unsigned> argumentOf;
  for (auto [index, value] : llvm::enumerate(operands))
    argumentOf.try_emplace(value, index);
  unsigned inPlace = 0;
  for (auto [index, value] : llvm::enumerate(operands)) {
    auto argument = dyn_cast<BlockArgument>(value);
    if (!argument || argument.getOwner() != &body)
      continue;
    unsigned number = argument.getArgNumber();
    if (entry.getArgAttr(number, mlir::moma::kHostScalarAttrName))
      callee.setArgAttr(index, mlir::moma::kHostScalarAttrName,
                        UnitAttr::get(context));
    auto name =
        entry.getArgAttrOfType<StringAttr>(number, mlir::moma::kResultAttrName);
    if (!name || !entry.getArgAttr(number, mlir::moma::kInPlaceAttrName))
      continue;
    auto in = argumentOf.find(argumentByName.lookup(name.getValue()));
    if (in == argumentOf.end())
      continue;
    auto pair = StringAttr::get(context, "in_place." + Twine(inPlace++));
    callee.setArgAttr(in->second, mlir::moma::kParamAttrName, pair);
    callee.setArgAttr(index, mlir::moma::kResultAttrName, pair);
    callee.setArgAttr(index, mlir::moma::kInPlaceAttrName,
                      UnitAttr::get(context));
  }

  // The call replaces the run where it ends; the free ops inside the run's
  // stretch that read what it computes move after it.
  caller.setInsertionPointAfter(run.ops.back());
  auto call = func::CallOp::create(caller, loc, callee, operands);
  IRMapping after;
  for (auto [result, replacement] : llvm::zip(results, call.getResults()))
    after.map(result, replacement);
  llvm::DenseSet<Value> computed(results.begin(), results.end());
  Operation *last = call;
  SmallVector<std::pair<Operation *, Operation *>> copies;
  for (Operation *op : run.ops) {
    if (!recomputed.contains(op))
      continue;
    caller.setInsertionPointAfter(last);
    last = caller.clone(*op, after);
    copies.emplace_back(op, last);
    computed.insert(op->getResults().begin(), op->getResults().end());
  }
  for (Operation *op = run.ops.front(); op != call;) {
    Operation *next = op->getNextNode();
    if (isFree(op) && llvm::any_of(op->getOperands(), [&](Value value) {
          return computed.contains(value);
        })) {
      op->moveAfter(last);
      last = op;
      for (Value result : op->getResults())
        computed.insert(result);
    }
    op = next;
  }
  auto outsideTheRun = [&](OpOperand &use) {
    return !inRun.contains(topLevel(use.getOwner()));
  };
  for (auto [result, replacement] : llvm::zip(results, call.getResults()))
    Value(result).replaceUsesWithIf(replacement, outsideTheRun);
  for (auto [op, copy] : copies)
    for (auto [result, replacement] :
         llvm::zip(op->getResults(), copy->getResults()))
      result.replaceUsesWithIf(replacement, outsideTheRun);
  for (auto write : writes)
    write.erase();
  for (Operation *op : llvm::reverse(run.ops)) {
    op->dropAllUses();
    op->erase();
  }
  return {callee, call};
}

/// A hash of what makes two outlined functions the same: their signature,
/// argument attributes and body, locations aside. Equal functions hash
/// alike; `sameFunction` decides.
llvm::hash_code structuralHash(func::FuncOp func) {
  llvm::hash_code hash =
      llvm::hash_combine(func.getFunctionType(), func.getAllArgAttrs());
  func.getBody().walk([&](Operation *op) {
    hash =
        llvm::hash_combine(hash, OperationEquivalence::computeHash(
                                     op, OperationEquivalence::ignoreHashValue,
                                     OperationEquivalence::ignoreHashValue,
                                     OperationEquivalence::IgnoreLocations));
  });
  return hash;
}

bool sameFunction(func::FuncOp a, func::FuncOp b) {
  return a.getFunctionType() == b.getFunctionType() &&
         a.getAllArgAttrs() == b.getAllArgAttrs() &&
         OperationEquivalence::isRegionEquivalentTo(
             &a.getBody(), &b.getBody(), OperationEquivalence::IgnoreLocations);
}

struct OutlineLayersPass
    : momac::impl::OutlineLayersBase<OutlineLayersPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SymbolTable symbols(module);
    SmallVector<func::FuncOp> entries;
    for (auto func : module.getOps<func::FuncOp>())
      if (func.isPublic() && !func.isExternal() &&
          func.getBody().hasOneBlock())
        entries.push_back(func);
    SmallVector<std::pair<func::FuncOp, func::CallOp>> outlined;
    for (func::FuncOp entry : entries)
      FunctionOutliner(entry, symbols).run(outlined);

    // Layers of one kind become the same function: one is kept.
    llvm::DenseMap<llvm::hash_code, SmallVector<func::FuncOp, 1>> kept;
    llvm::DenseMap<func::FuncOp, func::FuncOp> replacement;
    unsigned keptCount = 0;
    for (auto [func, call] : outlined) {
      SmallVector<func::FuncOp, 1> &candidates = kept[structuralHash(func)];
      auto same =
          llvm::find_if(candidates, [&, func = func](func::FuncOp other) {
            return sameFunction(func, other);
          });
      if (same != candidates.end()) {
        replacement[func] = *same;
      } else {
        candidates.push_back(func);
        ++keptCount;
      }
    }
    for (auto [func, call] : outlined)
      if (func::FuncOp same = replacement.lookup(func))
        call.setCallee(same.getSymName());
    for (auto [func, same] : replacement)
      symbols.erase(func);
    numFunctions += keptCount;
    numCalls += outlined.size();
  }
};

} // namespace
