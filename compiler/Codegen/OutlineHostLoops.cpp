//===- OutlineHostLoops.cpp - Host loops as functions of their own --------===//
//
// See Passes.td.
//
//===----------------------------------------------------------------------===//

#include "compiler/Codegen/Passes.h"

#include "mlir/IR/IRMapping.h"
#include "mlir/Transforms/RegionUtils.h"

namespace momac {
#define GEN_PASS_DEF_OUTLINEHOSTLOOPS
#include "compiler/Codegen/Passes.h.inc"
} // namespace momac

using namespace mlir;

namespace {

/// The values `loop` reads from outside: its operands and what its body
/// uses from above, in first-use order.
SetVector<Value> valuesReadBy(Operation *loop) {
  SetVector<Value> values(loop->getOperands().begin(),
                          loop->getOperands().end());
  getUsedValuesDefinedAbove(loop->getRegions(), values);
  return values;
}

bool isClonableConstant(Value value) {
  Operation *def = value.getDefiningOp();
  return def && def->getNumOperands() == 0 && def->getNumRegions() == 0 &&
         def->hasTrait<OpTrait::ConstantLike>();
}

/// Replaces `loop` by a call to a new private function `name` that runs it.
/// Fails (and changes nothing) when the loop reads a memref from outside,
/// or allocates on the stack (what it allocates would not outlive a call).
LogicalResult outline(scf::ForOp loop, StringRef name, ModuleOp module,
                      SymbolTable &symbols) {
  if (loop->walk([](LLVM::AllocaOp) { return WalkResult::interrupt(); })
          .wasInterrupted())
    return failure();
  SetVector<Value> read = valuesReadBy(loop);
  SmallVector<Value> arguments;
  for (Value value : read) {
    if (isClonableConstant(value))
      continue;
    if (isa<MemRefType, UnrankedMemRefType>(value.getType()))
      return failure();
    arguments.push_back(value);
  }

  OpBuilder b(module.getContext());
  b.setInsertionPointToEnd(module.getBody());
  auto type = b.getFunctionType(ValueRange(arguments).getTypes(),
                                loop.getResultTypes());
  auto callee = func::FuncOp::create(b, loop.getLoc(), name, type);
  // Local to the module (LLVM internal linkage), where the artifact
  // compiles the kernels, not the entry points.
  callee.setPrivate();
  callee->setAttr("llvm.linkage", LLVM::LinkageAttr::get(
                                      b.getContext(), LLVM::Linkage::Internal));
  symbols.insert(callee);
  Block *body = callee.addEntryBlock();
  b.setInsertionPointToStart(body);
  IRMapping mapping;
  for (auto [value, argument] : llvm::zip(arguments, body->getArguments()))
    mapping.map(value, argument);
  for (Value value : read)
    if (isClonableConstant(value))
      b.clone(*value.getDefiningOp(), mapping);
  Operation *copy = b.clone(*loop, mapping);
  func::ReturnOp::create(b, loop.getLoc(), copy->getResults());

  b.setInsertionPoint(loop);
  auto call = func::CallOp::create(b, loop.getLoc(), callee, arguments);
  loop->replaceAllUsesWith(call.getResults());
  loop->erase();
  return success();
}

struct OutlineHostLoopsPass
    : momac::impl::OutlineHostLoopsBase<OutlineHostLoopsPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SymbolTable symbols(module);
    SmallVector<func::FuncOp> functions(module.getOps<func::FuncOp>());
    for (func::FuncOp function : functions) {
      if (function.isDeclaration())
        continue;
      SmallVector<scf::ForOp> loops;
      for (Block &block : function.getBody())
        for (auto loop : block.getOps<scf::ForOp>())
          loops.push_back(loop);
      unsigned index = 0;
      for (scf::ForOp loop : loops)
        (void)outline(loop,
                      (function.getSymName() + "_loop_" + Twine(index++)).str(),
                      module, symbols);
    }
  }
};

} // namespace
