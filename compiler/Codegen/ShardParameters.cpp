//===- ShardParameters.cpp - FSDP gathers and reduce-scatters -------------===//
//
// See Passes.td. Positions are indices of the function body's top-level
// ops: a use inside a kernel's region counts at the kernel.
//
//===----------------------------------------------------------------------===//

#include "compiler/Codegen/Passes.h"

#include "dialects/moma/IR/MomaDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Interfaces/ViewLikeInterface.h"
#include "mlir/IR/Builders.h"

#include "llvm/ADT/BitVector.h"

namespace momac {
#define GEN_PASS_DEF_SHARDPARAMETERS
#include "compiler/Codegen/Passes.h.inc"
} // namespace momac

using namespace mlir;

namespace {

constexpr llvm::StringLiteral kGatherStart = "momart_fsdp_all_gather_start";
constexpr llvm::StringLiteral kGatherWait = "momart_fsdp_all_gather_wait";
constexpr llvm::StringLiteral kReduceScatter = "momart_fsdp_reduce_scatter";

/// A parameter argument or gradient out-parameter and where it lies.
struct ShardedBuffer {
  BlockArgument argument;
  int64_t unit;
  int64_t offset; // elements into the unit's flat buffer
};

/// A use of a sharded buffer, directly or through views, by an op that is
/// not itself a top-level view of it.
struct Use {
  OpOperand *operand;
  size_t position;
  const ShardedBuffer *buffer;
};

/// An interval of top-level positions during which one flat buffer of a
/// unit is live.
struct Window {
  int64_t unit;
  size_t first, last;
  SmallVector<Use> uses;
  Value flat; // the unit's buffer, memref<bytes x i8>
};

bool isViewOf(Operation *op, Value source) {
  if (op->getNumResults() != 1 || !isa<MemRefType>(op->getResult(0).getType()))
    return false;
  if (auto view = dyn_cast<ViewLikeOpInterface>(op))
    return view.getViewSource() == source;
  return isa<memref::CastOp>(op) && op->getOperand(0) == source;
}

class FunctionSharder {
public:
  FunctionSharder(func::FuncOp func, ModuleOp module)
      : func(func), module(module), body(func.getBody().front()) {
    for (auto [i, op] : llvm::enumerate(body))
      positions[&op] = i;
    for (Operation &op : body)
      topLevel.push_back(&op);
  }

  LogicalResult run() {
    auto elements = func->getAttrOfType<DenseI64ArrayAttr>(
        moma::kShardUnitElementsAttrName);
    if (!elements || !func.getBody().hasOneBlock())
      return func.emitError()
             << "sharded parameters need one block and "
             << moma::kShardUnitElementsAttrName;
    unitElements.assign(elements.asArrayRef().begin(),
                        elements.asArrayRef().end());
    for (BlockArgument argument : func.getArguments()) {
      unsigned i = argument.getArgNumber();
      auto unit = func.getArgAttrOfType<IntegerAttr>(i, moma::kShardUnitAttrName);
      auto offset =
          func.getArgAttrOfType<IntegerAttr>(i, moma::kShardOffsetAttrName);
      if (!unit)
        continue;
      auto type = dyn_cast<MemRefType>(argument.getType());
      if (!offset || !type || !type.getLayout().isIdentity() ||
          !type.hasStaticShape() || !type.getElementType().isF32() ||
          unit.getInt() < 0 || unit.getInt() >= int64_t(unitElements.size()))
        return func.emitError() << "sharded argument #" << i
                                << " needs a unit, an offset and an "
                                   "identity-layout static f32 memref";
      bool gradient = bool(func.getArgAttr(i, moma::kResultAttrName));
      (gradient ? gradients : parameters)
          .push_back({argument, unit.getInt(), offset.getInt()});
    }

    SmallVector<Window> gathers = parameterWindows();
    SmallVector<Window> reductions = gradientWindows();
    placeGathers(gathers);
    placeReduceScatters(reductions);
    return removeShardedArguments();
  }

private:
  /// Every use of `buffer`, following the top-level views of it.
  void collectUses(const ShardedBuffer &buffer, SmallVector<Use> &uses) {
    SmallVector<Value> worklist{buffer.argument};
    while (!worklist.empty()) {
      Value value = worklist.pop_back_val();
      for (OpOperand &operand : value.getUses()) {
        Operation *owner = operand.getOwner();
        if (owner->getBlock() == &body && isViewOf(owner, value)) {
          worklist.push_back(owner->getResult(0));
          continue;
        }
        Operation *top = body.findAncestorOpInBlock(*owner);
        uses.push_back({&operand, positions.lookup(top), &buffer});
      }
    }
  }

  /// Maximal runs of uses of one unit's parameters with no other unit's in
  /// between, in program order.
  SmallVector<Window> parameterWindows() {
    SmallVector<Use> uses;
    for (const ShardedBuffer &buffer : parameters)
      collectUses(buffer, uses);
    llvm::stable_sort(uses, [](const Use &a, const Use &b) {
      return std::make_pair(a.position, a.buffer->unit) <
             std::make_pair(b.position, b.buffer->unit);
    });
    SmallVector<Window> windows;
    for (const Use &use : uses) {
      if (windows.empty() || windows.back().unit != use.buffer->unit)
        windows.push_back({use.buffer->unit, use.position, use.position, {}, {}});
      windows.back().last = use.position;
      windows.back().uses.push_back(use);
    }
    return windows;
  }

  /// One window per unit from the first write of one of its gradients to
  /// the last.
  SmallVector<Window> gradientWindows() {
    llvm::DenseMap<int64_t, size_t> windowOfUnit;
    SmallVector<Window> windows;
    for (const ShardedBuffer &buffer : gradients) {
      SmallVector<Use> uses;
      collectUses(buffer, uses);
      if (uses.empty())
        continue;
      auto [it, inserted] = windowOfUnit.try_emplace(buffer.unit, windows.size());
      if (inserted)
        windows.push_back({buffer.unit, uses.front().position,
                           uses.front().position, {}, {}});
      Window &window = windows[it->second];
      for (const Use &use : uses) {
        window.first = std::min(window.first, use.position);
        window.last = std::max(window.last, use.position);
        window.uses.push_back(use);
      }
    }
    return windows;
  }

  Value pointerTo(OpBuilder &b, Location loc, Value memref) {
    Value index =
        memref::ExtractAlignedPointerAsIndexOp::create(b, loc, memref);
    Value address =
        arith::IndexCastOp::create(b, loc, b.getI64Type(), index);
    return LLVM::IntToPtrOp::create(
        b, loc, LLVM::LLVMPointerType::get(b.getContext()), address);
  }

  void callRuntime(OpBuilder &b, Location loc, llvm::StringRef name,
                   int64_t unit, Value flat) {
    if (!module.lookupSymbol<func::FuncOp>(name)) {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToEnd(module.getBody());
      auto type = b.getFunctionType(
          {b.getI32Type(), LLVM::LLVMPointerType::get(b.getContext())}, {});
      func::FuncOp::create(b, loc, name, type).setPrivate();
    }
    Value unitValue = arith::ConstantOp::create(
        b, loc, b.getI32IntegerAttr(int32_t(unit)));
    func::CallOp::create(b, loc, name, TypeRange{},
                         ValueRange{unitValue, pointerTo(b, loc, flat)});
  }

  /// The unit's flat buffer, allocated at `b`.
  Value allocateUnit(OpBuilder &b, Location loc, int64_t unit) {
    auto type = MemRefType::get({unitElements[unit] * 4}, b.getI8Type());
    return memref::AllocOp::create(b, loc, type, ValueRange{},
                                   b.getI64IntegerAttr(64));
  }

  /// Points the window's uses at views of its flat buffer: the parameter's
  /// own view (made right after the buffer), then the views of it that the
  /// use went through, recreated on top.
  void rebaseUses(Window &window, Operation *bufferDefinition) {
    llvm::DenseMap<Value, Value> rebased;
    std::function<Value(Value, const ShardedBuffer &)> rebase =
        [&](Value value, const ShardedBuffer &buffer) -> Value {
      if (Value known = rebased.lookup(value))
        return known;
      OpBuilder b(func.getContext());
      Value result;
      if (value == buffer.argument) {
        b.setInsertionPointAfter(bufferDefinition);
        Location loc = value.getLoc();
        Value shift = arith::ConstantIndexOp::create(b, loc, buffer.offset * 4);
        result = memref::ViewOp::create(b, loc, value.getType(), window.flat,
                                        shift, ValueRange{});
      } else {
        Operation *view = value.getDefiningOp();
        Value source = view->getNumOperands() && isa<ViewLikeOpInterface>(view)
                           ? cast<ViewLikeOpInterface>(view).getViewSource()
                           : view->getOperand(0);
        Value newSource = rebase(source, buffer);
        // Inside the window, right after the original (its index operands
        // are defined there); before the window, at its start.
        size_t at = positions.lookup(view);
        if (at >= window.first)
          b.setInsertionPointAfter(view);
        else
          b.setInsertionPoint(topLevel[window.first]);
        IRMapping mapping;
        mapping.map(source, newSource);
        result = b.clone(*view, mapping)->getResult(0);
      }
      rebased[value] = result;
      return result;
    };
    for (const Use &use : window.uses)
      use.operand->set(rebase(use.operand->get(), *use.buffer));
  }

  void placeGathers(SmallVector<Window> &windows) {
    // Window k's gather starts where window k-1 starts (the first at its
    // own start) and is waited for just before its first use.
    Location loc = func.getLoc();
    for (size_t k = 0; k < windows.size(); ++k) {
      Window &window = windows[k];
      Operation *start = topLevel[k ? windows[k - 1].first : window.first];
      OpBuilder b(start);
      auto alloc = cast<memref::AllocOp>(
          allocateUnit(b, loc, window.unit).getDefiningOp());
      window.flat = alloc;
      callRuntime(b, loc, kGatherStart, window.unit, window.flat);
      b.setInsertionPoint(topLevel[window.first]);
      callRuntime(b, loc, kGatherWait, window.unit, window.flat);
      b.setInsertionPointAfter(topLevel[window.last]);
      memref::DeallocOp::create(b, loc, window.flat);
      rebaseUses(window, alloc);
    }
  }

  void placeReduceScatters(SmallVector<Window> &windows) {
    Location loc = func.getLoc();
    for (Window &window : windows) {
      OpBuilder b(topLevel[window.first]);
      auto alloc = cast<memref::AllocOp>(
          allocateUnit(b, loc, window.unit).getDefiningOp());
      window.flat = alloc;
      b.setInsertionPointAfter(topLevel[window.last]);
      callRuntime(b, loc, kReduceScatter, window.unit, window.flat);
      memref::DeallocOp::create(b, loc, window.flat);
      rebaseUses(window, alloc);
    }
  }

  /// The original views of the sharded arguments are unused now; then the
  /// arguments themselves go.
  LogicalResult removeShardedArguments() {
    llvm::BitVector erase(func.getNumArguments());
    for (auto *list : {&parameters, &gradients})
      for (const ShardedBuffer &buffer : *list) {
        SmallVector<Operation *> views;
        SmallVector<Value> worklist{buffer.argument};
        while (!worklist.empty()) {
          Value value = worklist.pop_back_val();
          for (Operation *user : value.getUsers())
            if (isViewOf(user, value)) {
              views.push_back(user);
              worklist.push_back(user->getResult(0));
            }
        }
        for (Operation *view : llvm::reverse(views))
          if (view->use_empty())
            view->erase();
        if (!buffer.argument.use_empty())
          return func.emitError()
                 << "sharded argument #" << buffer.argument.getArgNumber()
                 << " still has a use the sharding did not see";
        erase.set(buffer.argument.getArgNumber());
      }
    return func.eraseArguments(erase);
  }

  func::FuncOp func;
  ModuleOp module;
  Block &body;
  llvm::DenseMap<Operation *, size_t> positions;
  SmallVector<Operation *> topLevel;
  SmallVector<int64_t> unitElements;
  SmallVector<ShardedBuffer> parameters, gradients;
};

struct ShardParametersPass
    : public momac::impl::ShardParametersBase<ShardParametersPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<func::FuncOp> sharded;
    for (auto func : module.getOps<func::FuncOp>())
      if (func->hasAttr(moma::kShardedParametersAttrName))
        sharded.push_back(func);
    for (func::FuncOp func : sharded)
      if (failed(FunctionSharder(func, module).run()))
        return signalPassFailure();
  }
};

} // namespace
