//===- SynthesizeGrad.cpp - Reverse-mode autodiff of the forward pass -----===//
//
// Adds @grad next to @forward; see Passes.td. The forward ops are cloned into
// @grad, then walked in reverse, each contributing its vector-Jacobian
// product (DifferentiableOpInterface) to the gradients of its operands.
//
//===----------------------------------------------------------------------===//

#include "compiler/Autodiff/Passes.h"

#include "dialects/moma/IR/MomaOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseSet.h"

namespace momac {
#define GEN_PASS_DEF_MOMASYNTHESIZEGRAD
#include "compiler/Autodiff/Passes.h.inc"
} // namespace momac

using namespace mlir;

namespace {

bool isFloatTensor(Value value) {
  auto type = dyn_cast<RankedTensorType>(value.getType());
  return type && isa<FloatType>(type.getElementType());
}

struct SynthesizeGradPass
    : public momac::impl::MomaSynthesizeGradBase<SynthesizeGradPass> {
  using MomaSynthesizeGradBase::MomaSynthesizeGradBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto forward = module.lookupSymbol<func::FuncOp>(forwardName);
    if (!forward) {
      module.emitError() << "no function @" << forwardName << " to differentiate";
      return signalPassFailure();
    }
    if (module.lookupSymbol(gradName)) {
      forward.emitError() << "@" << gradName << " already exists";
      return signalPassFailure();
    }
    if (failed(synthesize(forward)))
      signalPassFailure();
  }

  LogicalResult synthesize(func::FuncOp forward) {
    OpBuilder b(forward);
    b.setInsertionPointAfter(forward);
    auto grad = cast<func::FuncOp>(b.clone(*forward));
    grad.setName(gradName);
    Block &body = grad.getBody().front();
    auto ret = cast<func::ReturnOp>(body.getTerminator());
    Location loc = ret.getLoc();

    // Which results to report: the loss and "<loss>.<modality>", or all.
    SmallVector<Value> reported;
    SmallVector<Attribute> reportedNames;
    Value loss;
    for (unsigned i = 0; i < grad.getNumResults(); ++i) {
      auto name =
          grad.getResultAttrOfType<StringAttr>(i, moma::kResultAttrName);
      if (!name)
        continue;
      if (name.getValue() == lossName)
        loss = ret.getOperand(i);
      if (!reportAll && name.getValue() != lossName &&
          !name.getValue().starts_with(lossName + "."))
        continue;
      reported.push_back(ret.getOperand(i));
      reportedNames.push_back(name);
    }
    if (!loss)
      return forward.emitError() << "has no result named \"" << lossName
                                 << "\"";

    // Parameters are the float arguments not marked moma.no_grad; values
    // computed from them are active, and only active values get gradients.
    SmallVector<BlockArgument> params;
    llvm::DenseSet<Value> active;
    for (BlockArgument arg : body.getArguments())
      if (isFloatTensor(arg) &&
          !grad.getArgAttr(arg.getArgNumber(), moma::kNoGradAttrName)) {
        params.push_back(arg);
        active.insert(arg);
      }
    for (Operation &op : body.without_terminator())
      if (llvm::any_of(op.getOperands(),
                       [&](Value v) { return active.contains(v); }))
        for (Value result : op.getResults())
          if (isFloatTensor(result))
            active.insert(result);

    // Reverse sweep: gradients go before the return.
    b.setInsertionPoint(ret);
    llvm::DenseMap<Value, Value> adjoint;
    adjoint[loss] = arith::ConstantOp::create(
        b, loc, DenseElementsAttr::get(cast<ShapedType>(loss.getType()),
                                       b.getF32FloatAttr(1.0f).getValue()));
    SmallVector<Operation *> tape;
    for (Operation &op : body.without_terminator())
      tape.push_back(&op);
    for (Operation *op : llvm::reverse(tape)) {
      SmallVector<Value> resultGrads;
      bool reachesLoss = false;
      for (Value result : op->getResults()) {
        resultGrads.push_back(adjoint.lookup(result));
        reachesLoss |= bool(resultGrads.back());
      }
      bool needsGradient = llvm::any_of(
          op->getOperands(), [&](Value v) { return active.contains(v); });
      if (!reachesLoss || !needsGradient)
        continue;
      auto rule = dyn_cast<moma::DifferentiableOpInterface>(op);
      if (!rule)
        return op->emitError() << "has no gradient rule (" << op->getName()
                               << " does not implement "
                                  "DifferentiableOpInterface)";
      SmallVector<Value> operandGrads;
      if (failed(rule.buildVJP(b, resultGrads, operandGrads)))
        return failure();
      for (auto [operand, operandGrad] :
           llvm::zip(op->getOperands(), operandGrads)) {
        if (!operandGrad || !active.contains(operand))
          continue;
        Value &sum = adjoint[operand];
        sum = sum ? arith::AddFOp::create(b, op->getLoc(), sum, operandGrad)
                        .getResult()
                  : operandGrad;
      }
    }

    // Return the reported losses, then grad.<name> of every parameter.
    SmallVector<Value> results(reported);
    SmallVector<Attribute> resultNames(reportedNames);
    for (BlockArgument param : params) {
      Value gradient = adjoint.lookup(param);
      if (!gradient)
        gradient = arith::ConstantOp::create(
            b, loc, DenseElementsAttr::get(cast<ShapedType>(param.getType()),
                                           b.getF32FloatAttr(0.0f).getValue()));
      results.push_back(gradient);
      auto name = grad.getArgAttrOfType<StringAttr>(param.getArgNumber(),
                                                    moma::kParamAttrName);
      resultNames.push_back(
          b.getStringAttr("grad." + (name ? name.getValue() : "?").str()));
    }
    func::ReturnOp::create(b, loc, results);
    ret.erase();
    grad.setType(FunctionType::get(grad.getContext(),
                                   grad.getArgumentTypes(),
                                   ValueRange(results).getTypes()));
    SmallVector<DictionaryAttr> attrs;
    for (Attribute name : resultNames)
      attrs.push_back(
          b.getDictionaryAttr(b.getNamedAttr(moma::kResultAttrName, name)));
    grad.setAllResultAttrs(attrs);
    return success();
  }
};

} // namespace
