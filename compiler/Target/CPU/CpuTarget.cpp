//===- CpuTarget.cpp - The CPU target's backend ---------------------------===//

#include "compiler/Target/CPU/CpuTarget.h"

#include "compiler/Pipelines/Pipelines.h"
#include "compiler/Target/CPU/Passes.h"
#include "compiler/Target/Common/CpuRuntime.h"

#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Dialect/OpenMP/OpenMPToLLVMIRTranslation.h"

using namespace mlir;
using namespace momac;

std::string momac::cpuLoweringPipeline() {
  OpPassManager pm(ModuleOp::getOperationName());
  addSharedLoweringPasses(pm);
  addCpuCodegenPasses(pm);
  std::string text;
  llvm::raw_string_ostream os(text);
  pm.printAsTextualPipeline(os);
  return text;
}

TargetBackend momac::cpuTargetBackend() {
  TargetBackend cpu;
  cpu.name = "cpu";
  cpu.addCodegenPasses = [](OpPassManager &pm) { addCpuCodegenPasses(pm); };
  cpu.registerDialects = [](DialectRegistry &registry) {
    registerOpenMPDialectTranslation(registry);
  };
  cpu.hostOptLevel = 3;
  // The step runs on the host, which has the counts a MoD layer's router
  // decides at hand: the layer's groups take exactly their tokens.
  cpu.padsModGroups = false;
  cpu.linkArguments = cpuLinkArguments();
  return cpu;
}
