//===- CpuTarget.cpp - The CPU target's backend ---------------------------===//

#include "compiler/Target/CPU/CpuTarget.h"

#include "compiler/Pipelines/Pipelines.h"
#include "compiler/Target/CPU/Passes.h"
#include "compiler/Target/Common/CpuRuntime.h"

#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Dialect/OpenMP/OpenMPToLLVMIRTranslation.h"
#include "llvm/TargetParser/Host.h"

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

namespace {

bool hostHasAmxBf16() {
  for (const auto &feature : llvm::sys::getHostCPUFeatures())
    if (feature.getKey() == "amx-bf16")
      return feature.getValue();
  return false;
}

} // namespace

TargetBackend momac::cpuTargetBackend(CpuBf16Gemm bf16Gemm) {
  TargetBackend cpu;
  // Where AVX512_BF16 is the CPU's best, oneDNN's bf16 GEMM was measured
  // below OpenBLAS's f32 one (issue 25, a Xeon without AMX), and without
  // AVX-512 oneDNN has none: there the f32 GEMM on rounded operands is the
  // faster, and it skips the copies that widen bf16 operands for it.
  cpu.gemmOperandsInF32 = bf16Gemm == CpuBf16Gemm::F32 ||
                          (bf16Gemm == CpuBf16Gemm::Auto && !hostHasAmxBf16());
  if (cpu.gemmOperandsInF32)
    cpu.bf16GemmDescription =
        std::string("f32 sgemm on bf16-rounded operands kept in f32 (momac "
                    "--cpu-bf16-gemm=") +
        (bf16Gemm == CpuBf16Gemm::Auto
             ? "auto: the compiling CPU has no AMX-BF16)"
             : "f32)");
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
