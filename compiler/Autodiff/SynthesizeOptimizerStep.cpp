//===- SynthesizeOptimizerStep.cpp - Clipping and AdamW as code -----------===//
//
// Adds @optimizer_step; see Passes.td.
//
//===----------------------------------------------------------------------===//

#include "compiler/Autodiff/Passes.h"

#include "dialects/moma/IR/MomaOps.h"
#include "lib/config/Parameters.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"

#include <limits>

namespace momac {
#define GEN_PASS_DEF_MOMASYNTHESIZEOPTIMIZERSTEP
#include "compiler/Autodiff/Passes.h.inc"
} // namespace momac

using namespace mlir;

namespace {

struct SynthesizeOptimizerStepPass
    : public momac::impl::MomaSynthesizeOptimizerStepBase<
          SynthesizeOptimizerStepPass> {
  using MomaSynthesizeOptimizerStepBase::MomaSynthesizeOptimizerStepBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto forward = module.lookupSymbol<func::FuncOp>(forwardName);
    if (!forward) {
      module.emitError() << "no function @" << forwardName;
      return signalPassFailure();
    }
    // The trained parameters: named float arguments, aux routers excluded
    // (or, with aux-routers, exactly the aux routers).
    SmallVector<std::pair<std::string, RankedTensorType>> params;
    for (unsigned i = 0; i < forward.getNumArguments(); ++i) {
      auto name = forward.getArgAttrOfType<StringAttr>(i, moma::kParamAttrName);
      auto type = dyn_cast<RankedTensorType>(forward.getArgument(i).getType());
      if (!name || !type || !isa<FloatType>(type.getElementType()) ||
          forward.getArgAttr(i, moma::kNoGradAttrName) ||
          momac::isAuxRouterParameter(name.getValue()) != bool(auxRouters))
        continue;
      params.emplace_back(name.str(), type);
    }

    OpBuilder b = OpBuilder::atBlockEnd(module.getBody());
    Location loc = forward.getLoc();
    MLIRContext *context = &getContext();
    auto scheduleType = RankedTensorType::get({3}, b.getF32Type());
    auto scalarType = RankedTensorType::get({}, b.getF32Type());
    SmallVector<Type> argTypes, resultTypes;
    SmallVector<std::string> argNames, resultNames;
    for (const char *prefix : {"", "grad.", "optim.m.", "optim.v."})
      for (auto &[name, type] : params) {
        argTypes.push_back(type);
        argNames.push_back(prefix + name);
      }
    argTypes.push_back(scheduleType);
    argNames.push_back("schedule");
    for (const char *prefix : {"", "optim.m.", "optim.v."})
      for (auto &[name, type] : params) {
        resultTypes.push_back(type);
        resultNames.push_back(prefix + name);
      }
    resultTypes.push_back(scalarType);
    resultNames.push_back("grad_norm");

    auto step =
        func::FuncOp::create(b, loc, stepName,
                             FunctionType::get(context, argTypes, resultTypes));
    // All at once: setting one argument's attributes copies the whole list,
    // quadratic in the parameter count of a deep model.
    auto named = [&](StringRef attr, Attribute value) {
      return b.getNamedAttr(attr, value);
    };
    step.setAllArgAttrs(llvm::map_to_vector(argNames, [&](StringRef name) {
      return b.getDictionaryAttr(
          named(moma::kParamAttrName, b.getStringAttr(name)));
    }));
    // Parameters and moments are updated in place, element by element; the
    // last result is the gradient norm.
    step.setAllResultAttrs(
        llvm::map_to_vector(llvm::enumerate(resultNames), [&](auto entry) {
          SmallVector<NamedAttribute, 2> attrs = {
              named(moma::kResultAttrName, b.getStringAttr(entry.value()))};
          if (entry.index() + 1 < resultNames.size())
            attrs.push_back(named(moma::kInPlaceAttrName, b.getUnitAttr()));
          return b.getDictionaryAttr(attrs);
        }));
    Block *body = step.addEntryBlock();
    b.setInsertionPointToStart(body);

    size_t n = params.size();
    ValueRange args = body->getArguments();
    ValueRange weights = args.slice(0, n), grads = args.slice(n, n),
               firstMoments = args.slice(2 * n, n),
               secondMoments = args.slice(3 * n, n);
    Value schedule = args.back();

    // clip = min(1, grad_clip / (norm + 1e-6)), or 1 without clipping; NaN
    // when the norm is not finite (a NaN or Inf in some gradient), which
    // makes every update below leave its parameter and moments as they are:
    // the runtime then stops or skips the step (momarun --skip-nonfinite)
    // by reading the norm, without a pass of its own over the gradients.
    Value norm = moma::GlobalNormOp::create(b, loc, scalarType, grads);
    Value normValue = tensor::ExtractOp::create(b, loc, norm, ValueRange{});
    auto f32 = [&](float value) {
      return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(value))
          .getResult();
    };
    Value factor = f32(1.0f);
    if (double(gradClip) > 0) {
      Value shifted = arith::AddFOp::create(b, loc, normValue, f32(1e-6f));
      Value ratio = arith::DivFOp::create(b, loc, f32(gradClip), shifted);
      factor = arith::MinimumFOp::create(b, loc, ratio, f32(1.0f));
    }
    Value finite = arith::CmpFOp::create(
        b, loc, arith::CmpFPredicate::OLT, normValue,
        f32(std::numeric_limits<float>::infinity()));
    Value guarded = arith::SelectOp::create(
        b, loc, finite, factor, f32(std::numeric_limits<float>::quiet_NaN()));
    Value clip = tensor::FromElementsOp::create(b, loc, scalarType,
                                                ValueRange{guarded});

    SmallVector<Value> newWeights, newFirst, newSecond;
    for (size_t i = 0; i < n; ++i) {
      double decay = momac::hasWeightDecay(params[i].first) && !auxRouters
                         ? double(weightDecay)
                         : 0.0;
      // Named after its parameter ("layers.3.attention.wq.weight"), so
      // that the update belongs to its layer (--stats, -moma-outline-layers).
      Location at = NameLoc::get(b.getStringAttr(params[i].first), loc);
      auto update = moma::AdamWUpdateOp::create(
          b, at, params[i].second, params[i].second, params[i].second,
          weights[i], grads[i], firstMoments[i], secondMoments[i], schedule,
          clip, b.getF64FloatAttr(beta1), b.getF64FloatAttr(beta2),
          b.getF64FloatAttr(eps), b.getF64FloatAttr(decay));
      newWeights.push_back(update.getNewParam());
      newFirst.push_back(update.getNewFirstMoment());
      newSecond.push_back(update.getNewSecondMoment());
    }
    SmallVector<Value> results(newWeights);
    llvm::append_range(results, newFirst);
    llvm::append_range(results, newSecond);
    results.push_back(norm);
    func::ReturnOp::create(b, loc, results);
  }
};

} // namespace
