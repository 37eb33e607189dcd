//===- CpuTarget.cpp - Compile moma modules into CPU artifacts ------------===//

#include "compiler/Target/CPU/CpuTarget.h"

#include "compiler/Pipelines/Pipelines.h"
#include "compiler/Target/CPU/Passes.h"
#include "compiler/Target/Common/EntryPoints.h"

#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Dialect/OpenMP/OpenMPToLLVMIRTranslation.h"

#include "llvm/ADT/ScopeExit.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"

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

/// What model.so links besides its objects: the CPU runtime archive
/// (momart_*: top-k selection, bf16 GEMM) inside, the OpenMP runtime,
/// OpenBLAS (the f32 GEMMs), oneDNN (the bf16 GEMMs) and MLIR's C runner
/// utilities (memrefCopy, for copies between strided views).
std::vector<std::string> cpuLinkArguments() {
  std::string libDir = MOMAC_LLVM_LIBRARY_DIR;
  return {
      MOMAC_CPU_RUNTIME_ARCHIVE,
      "-L" + libDir,
      "-lomp",
      "-Wl,-rpath," + libDir,
      "-lmlir_c_runner_utils",
      "-lopenblas",
      // oneDNN, for the bf16 GEMMs only (kept as a dependency only when
      // the archive's momart_gemm_bf16 is linked in). It is named after
      // -lomp on purpose: oneDNN's OpenMP calls then bind to LLVM's libomp
      // (which also exports the GNU OpenMP ABI) before they reach
      // libgomp, so a oneDNN call inside one of our parallel loops sees
      // that loop and runs on its thread instead of starting a second
      // thread pool.
      "-Wl,--as-needed",
      "-ldnnl",
      "-Wl,--no-as-needed",
      "-lm"};
}

} // namespace

LogicalResult momac::buildCpuArtifact(ModuleOp module,
                                      const ModelConfig &config,
                                      llvm::StringRef descriptionText,
                                      const ArtifactOptions &options) {
  Location loc = module.getLoc();
  MLIRContext *context = module.getContext();
  if (std::error_code ec = llvm::sys::fs::create_directories(options.outputDir))
    return emitError(loc) << "cannot create " << options.outputDir << ": "
                          << ec.message();

  loadLoweringDialects(context);
  FailureOr<std::vector<EntryPointSpec>> entries = prepareEntryPoints(module);
  if (failed(entries))
    return failure();

  TimingScope disabled;
  TimingScope &timing = options.timing ? *options.timing : disabled;
  PassManager pm(context);
  // Honors --mlir-print-ir-after-all, ... where registered.
  if (failed(applyPassManagerCLOptions(pm)))
    return failure();
  TimingScope loweringTimer = timing.nest("CPU lowering (MLIR passes)");
  pm.enableTiming(loweringTimer);
  addSharedLoweringPasses(pm);
  addCpuCodegenPasses(pm);
  if (failed(pm.run(module)))
    return failure();
  for (const EntryPointSpec &entry : *entries)
    if (failed(addPackedEntryPoint(module, entry.name)))
      return failure();
  loweringTimer.stop();

  llvm::SmallString<256> objectPrefix(options.outputDir),
      library(options.outputDir);
  llvm::sys::path::append(objectPrefix, "model");
  llvm::sys::path::append(library, "model.so");
  registerOpenMPDialectTranslation(*context);
  FailureOr<SmallVector<std::string>> objects = emitHostObjects(
      module, objectPrefix, options.keepLLVMIR, /*partitions=*/0,
      /*optLevel=*/3, timing);
  if (failed(objects))
    return failure();
  TimingScope linkTimer = timing.nest("link model.so");
  llvm::scope_exit removeObjects([&] {
    for (const std::string &object : *objects)
      llvm::sys::fs::remove(object);
  });
  if (failed(linkSharedLibrary(loc, *objects, library, cpuLinkArguments())) ||
      failed(writeManifestAndDescription(loc, config, "cpu", *entries,
                                         options.outputDir, descriptionText)))
    return failure();
  return success();
}
