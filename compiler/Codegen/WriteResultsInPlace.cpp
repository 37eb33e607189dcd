//===- WriteResultsInPlace.cpp - In-place results use their arguments ----===//
//
// See Passes.td.
//
//===----------------------------------------------------------------------===//

#include "compiler/Codegen/Passes.h"

#include "dialects/moma/IR/MomaDialect.h"

namespace momac {
#define GEN_PASS_DEF_WRITERESULTSINPLACE
#include "compiler/Codegen/Passes.h.inc"
} // namespace momac

using namespace mlir;

namespace {

struct WriteResultsInPlacePass
    : momac::impl::WriteResultsInPlaceBase<WriteResultsInPlacePass> {
  void runOnOperation() override {
    func::FuncOp func = getOperation();
    if (func.isDeclaration())
      return;
    llvm::StringMap<BlockArgument> arguments;
    for (BlockArgument arg : func.getArguments())
      if (auto name = func.getArgAttrOfType<StringAttr>(arg.getArgNumber(),
                                                        moma::kParamAttrName))
        arguments[name.getValue()] = arg;
    for (BlockArgument out : func.getArguments()) {
      unsigned index = out.getArgNumber();
      if (!func.getArgAttr(index, moma::kInPlaceAttrName))
        continue;
      auto name =
          func.getArgAttrOfType<StringAttr>(index, moma::kResultAttrName);
      BlockArgument in = name ? arguments.lookup(name.getValue()) : nullptr;
      if (!in || in.getType() != out.getType()) {
        func.emitError() << "in-place result #" << index
                         << " has no argument of its name and type";
        return signalPassFailure();
      }
      out.replaceAllUsesWith(in);
    }
  }
};

} // namespace
