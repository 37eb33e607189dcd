//===- MergeKernelModules.cpp - One gpu.module for a step's kernels -------===//
//
// See Passes.td.
//
//===----------------------------------------------------------------------===//

#include "compiler/Target/CUDA/Passes.h"

#include "mlir/IR/SymbolTable.h"

namespace momac {
#define GEN_PASS_DEF_MERGEKERNELMODULES
#include "compiler/Target/CUDA/Passes.h.inc"
} // namespace momac

using namespace mlir;

namespace {

struct MergeKernelModulesPass
    : momac::impl::MergeKernelModulesBase<MergeKernelModulesPass> {
  using MergeKernelModulesBase::MergeKernelModulesBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<gpu::GPUModuleOp> kernels(module.getOps<gpu::GPUModuleOp>());
    if (kernels.empty())
      return;
    if (module.lookupSymbol(moduleName)) {
      module.emitError("moma-merge-kernel-modules: '")
          << moduleName << "' is taken";
      return signalPassFailure();
    }
    OpBuilder builder(kernels.front());
    auto merged =
        gpu::GPUModuleOp::create(builder, kernels.front().getLoc(), moduleName);
    SymbolTable table(merged);
    // Outlining names every kernel function after its entry point
    // (forward_kernel) and makes the modules' names unique
    // (forward_kernel_0, ...): a kernel takes its module's name.
    for (gpu::GPUModuleOp kernel : kernels) {
      auto functions = llvm::to_vector(kernel.getOps<gpu::GPUFuncOp>());
      if (functions.size() != 1 ||
          !llvm::hasSingleElement(kernel.getBody()->without_terminator())) {
        kernel.emitError("moma-merge-kernel-modules: expects one kernel per "
                         "outlined module");
        return signalPassFailure();
      }
      gpu::GPUFuncOp function = functions.front();
      function.setName(kernel.getName());
      // With only a maximum block size (.maxntid 128, from the launch),
      // ptxas budgets registers for 16 resident blocks per SM (32 per
      // thread) and spills rather than exceed it; one block per SM at
      // least (.minnctapersm 1) lets it use what the kernel needs.
      function->setAttr("nvvm.minctasm", builder.getI32IntegerAttr(1));
      function->remove();
      table.insert(function);
    }
    // The layers of a model launch the same kernels on different buffers
    // (their shapes are constants, their buffers arguments): a kernel
    // identical to an earlier one but for its name is dropped, and its
    // launches go to the earlier one. A 24-layer model then compiles
    // about one layer's kernels.
    llvm::StringMap<StringAttr> firstWithBody;
    llvm::DenseMap<StringAttr, StringAttr> replacement;
    for (gpu::GPUFuncOp function :
         llvm::make_early_inc_range(merged.getOps<gpu::GPUFuncOp>())) {
      StringAttr name = function.getNameAttr();
      function.setName("kernel");
      std::string body;
      llvm::raw_string_ostream os(body);
      function->print(os, OpPrintingFlags().useLocalScope());
      function.setName(name);
      auto [first, inserted] = firstWithBody.try_emplace(body, name);
      if (!inserted) {
        replacement[name] = first->second;
        table.erase(function);
      }
    }
    auto mergedName = builder.getStringAttr(moduleName);
    module.walk([&](gpu::LaunchFuncOp launch) {
      StringAttr kernel = launch.getKernelModuleName();
      if (auto found = replacement.find(kernel); found != replacement.end())
        kernel = found->second;
      launch.setKernelAttr(
          SymbolRefAttr::get(mergedName, {FlatSymbolRefAttr::get(kernel)}));
    });
    for (gpu::GPUModuleOp kernel : kernels)
      kernel.erase();
  }
};

} // namespace
