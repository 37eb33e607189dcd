//===- SynthesizeShardedStep.cpp - The entry points of an FSDP step -------===//
//
// Adds @fsdp_grad, @fsdp_grad_norm and @fsdp_adamw_{decayed,undecayed}; see
// Passes.td.
//
//===----------------------------------------------------------------------===//

#include "compiler/Autodiff/Passes.h"

#include "dialects/moma/IR/MomaOps.h"
#include "lib/config/ShardUnits.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"

namespace momac {
#define GEN_PASS_DEF_MOMASYNTHESIZESHARDEDSTEP
#include "compiler/Autodiff/Passes.h.inc"
} // namespace momac

using namespace mlir;

namespace {

bool isParameterArgument(func::FuncOp func, unsigned index) {
  auto type = dyn_cast<RankedTensorType>(func.getArgument(index).getType());
  return type && isa<FloatType>(type.getElementType()) &&
         func.getArgAttr(index, moma::kParamAttrName) &&
         !func.getArgAttr(index, moma::kNoGradAttrName);
}

struct SynthesizeShardedStepPass
    : public momac::impl::MomaSynthesizeShardedStepBase<
          SynthesizeShardedStepPass> {
  using MomaSynthesizeShardedStepBase::MomaSynthesizeShardedStepBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto grad = module.lookupSymbol<func::FuncOp>(gradName);
    if (!grad) {
      module.emitError() << "no function @" << gradName;
      return signalPassFailure();
    }
    if (chunkElements <= 0 || chunkElements % momac::kShardAlignment) {
      module.emitError() << "the optimizer chunk (" << int64_t(chunkElements)
                         << " elements) must be a positive multiple of "
                         << momac::kShardAlignment;
      return signalPassFailure();
    }
    if (failed(addShardedGrad(grad)))
      return signalPassFailure();
    addChunkFunctions(grad.getLoc());
  }

  /// @fsdp_grad: @grad with each parameter and gradient placed in its unit.
  LogicalResult addShardedGrad(func::FuncOp grad) {
    SmallVector<std::pair<std::string, int64_t>> parameters;
    SmallVector<unsigned> argumentIndex;
    for (unsigned i = 0; i < grad.getNumArguments(); ++i) {
      if (!isParameterArgument(grad, i))
        continue;
      auto type = cast<RankedTensorType>(grad.getArgument(i).getType());
      parameters.emplace_back(
          grad.getArgAttrOfType<StringAttr>(i, moma::kParamAttrName).str(),
          type.getNumElements());
      argumentIndex.push_back(i);
    }
    std::vector<momac::ShardUnit> units = momac::planShardUnits(parameters);

    OpBuilder b(grad);
    b.setInsertionPointAfter(grad);
    auto sharded = cast<func::FuncOp>(b.clone(*grad));
    sharded.setSymName("fsdp_grad");
    Builder attrs(&getContext());
    SmallVector<Attribute> unitNames;
    SmallVector<int64_t> unitElements;
    llvm::StringMap<std::pair<int64_t, int64_t>> placement;
    for (auto [u, unit] : llvm::enumerate(units)) {
      unitNames.push_back(attrs.getStringAttr(unit.name));
      unitElements.push_back(unit.elements);
      for (auto [param, offset] : llvm::zip(unit.parameters, unit.offsets)) {
        unsigned arg = argumentIndex[param];
        sharded.setArgAttr(arg, moma::kShardUnitAttrName,
                           attrs.getI64IntegerAttr(int64_t(u)));
        sharded.setArgAttr(arg, moma::kShardOffsetAttrName,
                           attrs.getI64IntegerAttr(offset));
        placement[parameters[param].first] = {int64_t(u), offset};
      }
    }
    for (unsigned i = 0; i < sharded.getNumResults(); ++i) {
      auto name =
          sharded.getResultAttrOfType<StringAttr>(i, moma::kResultAttrName);
      if (!name || !name.getValue().starts_with("grad."))
        continue;
      auto it = placement.find(name.getValue().drop_front(strlen("grad.")));
      if (it == placement.end())
        return sharded.emitError()
               << "gradient " << name << " of no parameter argument";
      sharded.setResultAttr(i, moma::kShardUnitAttrName,
                            attrs.getI64IntegerAttr(it->second.first));
      sharded.setResultAttr(i, moma::kShardOffsetAttrName,
                            attrs.getI64IntegerAttr(it->second.second));
    }
    sharded->setAttr(moma::kShardedParametersAttrName, attrs.getUnitAttr());
    sharded->setAttr(moma::kShardUnitsAttrName, attrs.getArrayAttr(unitNames));
    sharded->setAttr(moma::kShardUnitElementsAttrName,
                     attrs.getDenseI64ArrayAttr(unitElements));
    return success();
  }

  void addChunkFunctions(Location loc) {
    ModuleOp module = getOperation();
    MLIRContext *context = &getContext();
    OpBuilder b = OpBuilder::atBlockEnd(module.getBody());
    auto chunk = RankedTensorType::get({chunkElements}, b.getF32Type());
    auto scalar = RankedTensorType::get({}, b.getF32Type());
    auto schedule = RankedTensorType::get({3}, b.getF32Type());
    auto name = [&](llvm::StringRef text) { return b.getStringAttr(text); };

    auto norm = func::FuncOp::create(
        b, loc, "fsdp_grad_norm", FunctionType::get(context, {chunk}, {scalar}));
    norm.setArgAttr(0, moma::kParamAttrName, name("grad"));
    norm.setResultAttr(0, moma::kResultAttrName, name("norm"));
    {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(norm.addEntryBlock());
      Value value = moma::GlobalNormOp::create(b, loc, scalar,
                                               norm.getArgument(0));
      func::ReturnOp::create(b, loc, value);
    }

    for (bool decayed : {true, false}) {
      SmallVector<Type> argTypes(4, chunk);
      argTypes.append({schedule, scalar});
      auto step = func::FuncOp::create(
          b, loc, decayed ? "fsdp_adamw_decayed" : "fsdp_adamw_undecayed",
          FunctionType::get(context, argTypes, {chunk, chunk, chunk}));
      const char *argNames[] = {"param",    "grad",     "optim.m",
                                "optim.v",  "schedule", "clip"};
      for (auto [i, argName] : llvm::enumerate(argNames))
        step.setArgAttr(i, moma::kParamAttrName, name(argName));
      const char *resultNames[] = {"param", "optim.m", "optim.v"};
      for (auto [i, resultName] : llvm::enumerate(resultNames)) {
        step.setResultAttr(i, moma::kResultAttrName, name(resultName));
        step.setResultAttr(i, moma::kInPlaceAttrName, b.getUnitAttr());
      }
      OpBuilder::InsertionGuard guard(b);
      Block *body = step.addEntryBlock();
      b.setInsertionPointToStart(body);
      ValueRange args = body->getArguments();
      auto update = moma::AdamWUpdateOp::create(
          b, loc, chunk, chunk, chunk, args[0], args[1], args[2], args[3],
          args[4], args[5], b.getF64FloatAttr(beta1), b.getF64FloatAttr(beta2),
          b.getF64FloatAttr(eps),
          b.getF64FloatAttr(decayed ? double(weightDecay) : 0.0));
      func::ReturnOp::create(b, loc, update.getResults());
    }
  }
};

} // namespace
