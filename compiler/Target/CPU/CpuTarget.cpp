//===- CpuTarget.cpp - Compile moma modules into CPU artifacts ------------===//

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

LogicalResult momac::buildCpuArtifact(ModuleOp module,
                                      const ModelConfig &config,
                                      llvm::StringRef descriptionText,
                                      const ArtifactOptions &options) {
  TargetBackend cpu;
  cpu.name = "cpu";
  cpu.addCodegenPasses = [](OpPassManager &pm) { addCpuCodegenPasses(pm); };
  cpu.registerDialects = [](DialectRegistry &registry) {
    registerOpenMPDialectTranslation(registry);
  };
  cpu.hostOptLevel = 3;
  cpu.linkArguments = cpuLinkArguments();
  return buildArtifact(module, config, descriptionText, options, cpu);
}
