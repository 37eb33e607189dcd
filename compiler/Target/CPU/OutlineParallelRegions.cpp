//===- OutlineParallelRegions.cpp - One function per OpenMP region --------===//
//
// See Passes.td. This is gpu-kernel-outlining's idea on the CPU: a kernel
// (here an omp.parallel region on the LLVM dialect) moves into a function
// whose arguments are the values it captures.
//
//===----------------------------------------------------------------------===//

#include "compiler/Target/CPU/Passes.h"

#include "mlir/IR/IRMapping.h"
#include "mlir/Transforms/RegionUtils.h"

namespace momac {
#define GEN_PASS_DEF_OUTLINEPARALLELREGIONS
#include "compiler/Target/CPU/Passes.h.inc"
} // namespace momac

using namespace mlir;

namespace {

/// A value the outlined function recomputes instead of taking as an
/// argument: constants (sizes, strides, offsets of static shapes) must stay
/// visible to LLVM, which specializes and vectorizes the loops on them; an
/// argument would hide them once code generation splits the module and the
/// function is no longer internal.
bool isRematerializable(Value value) {
  Operation *def = value.getDefiningOp();
  return def && def->getNumOperands() == 0 && def->getNumRegions() == 0 &&
         (def->hasTrait<OpTrait::ConstantLike>() ||
          isa<LLVM::ZeroOp, LLVM::UndefOp, LLVM::PoisonOp,
              LLVM::AddressOfOp>(def));
}

/// The values `op` uses (as operands or inside its regions) that are
/// defined outside it, in first-use order.
SetVector<Value> capturedValues(Operation *op) {
  SetVector<Value> captured;
  for (Value operand : op->getOperands())
    captured.insert(operand);
  for (Region &region : op->getRegions())
    getUsedValuesDefinedAbove(region, captured);
  return captured;
}

struct OutlineParallelRegionsPass
    : public momac::impl::OutlineParallelRegionsBase<
          OutlineParallelRegionsPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<LLVM::LLVMFuncOp> functions(
        module.getOps<LLVM::LLVMFuncOp>());
    for (LLVM::LLVMFuncOp function : functions) {
      SmallVector<omp::ParallelOp> regions;
      function.walk([&](omp::ParallelOp parallel) {
        if (!parallel->getParentOfType<omp::ParallelOp>())
          regions.push_back(parallel);
      });
      for (auto [index, parallel] : llvm::enumerate(regions))
        outline(function, parallel, index);
    }
  }

  void outline(LLVM::LLVMFuncOp function, omp::ParallelOp parallel,
               size_t index) {
    Location loc = parallel.getLoc();
    SetVector<Value> captured, constants;
    for (Value value : capturedValues(parallel))
      (isRematerializable(value) ? constants : captured).insert(value);
    SmallVector<Type> argumentTypes;
    for (Value value : captured)
      argumentTypes.push_back(value.getType());

    OpBuilder builder(function);
    builder.setInsertionPointAfter(function);
    auto type = LLVM::LLVMFunctionType::get(
        LLVM::LLVMVoidType::get(&getContext()), argumentTypes);
    std::string name =
        (function.getName() + "_parallel_" + llvm::Twine(index)).str();
    auto outlined = LLVM::LLVMFuncOp::create(builder, loc, name, type,
                                             LLVM::Linkage::Internal);
    // Inlined back into its caller, the region would bring the quadratic
    // translation back and LLVM's optimizer would face the giant function
    // again; the call costs nothing next to a parallel loop.
    outlined.setNoInline(true);
    Block *body = outlined.addEntryBlock(builder);
    IRMapping mapping;
    mapping.map(captured.getArrayRef(), body->getArguments());
    builder.setInsertionPointToStart(body);
    for (Value constant : constants)
      builder.clone(*constant.getDefiningOp(), mapping);
    builder.clone(*parallel, mapping);
    LLVM::ReturnOp::create(builder, loc, ValueRange{});

    builder.setInsertionPoint(parallel);
    LLVM::CallOp::create(builder, loc, outlined, captured.getArrayRef());
    parallel->erase();
  }
};

} // namespace
