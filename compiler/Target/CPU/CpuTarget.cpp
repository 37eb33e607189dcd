//===- CpuTarget.cpp - Compile moma modules into CPU artifacts ------------===//

#include "compiler/Target/CPU/CpuTarget.h"

#include "compiler/Conversion/Passes.h"
#include "compiler/Target/CPU/EntryPoints.h"
#include "lib/config/Parameters.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/IR/Verifier.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/OpenMP/OpenMPToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Export.h"

#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/SubtargetFeature.h"

using namespace mlir;
using namespace momac;

std::string momac::cpuLoweringPipeline() {
  // Kernels are parallel loops run by OpenMP. memref ops are lowered before
  // scf.for becomes CFG, since an scf.for inside an OpenMP region sits in a
  // memref.alloca_scope that must keep a single block. Functions are lowered
  // before OpenMP, whose conversion would otherwise lower them with full
  // memref descriptors instead of the bare pointers of our entry ABI.
  // eliminate-empty-tensors lets the kernels that produce an entry point's
  // results (AdamW's new parameters and moments, most gradients) write
  // straight into the caller's buffers instead of into a temporary and a
  // copy. It runs before cse, while every kernel still has its own
  // tensor.empty and fill: once cse shares a fill among several kernels,
  // giving it a result's buffer would let those kernels write into it too.
  return "convert-moma-to-linalg,"
         "func.func(convert-elementwise-to-linalg),"
         "canonicalize,eliminate-empty-tensors,cse,"
         "one-shot-bufferize{bufferize-function-boundaries "
         "function-boundary-type-conversion=identity-layout-map},"
         "buffer-deallocation-pipeline,"
         "convert-bufferization-to-memref,"
         "convert-linalg-to-blas,"
         "func.func(convert-linalg-to-parallel-loops),"
         "func.func(scf-forall-to-parallel),"
         "convert-scf-to-openmp,"
         "expand-strided-metadata,"
         "lower-affine,"
         "finalize-memref-to-llvm,"
         "convert-scf-to-cf,"
         "convert-math-to-llvm,"
         "convert-arith-to-llvm,"
         "convert-func-to-llvm{use-bare-ptr-memref-call-conv},"
         "convert-cf-to-llvm,"
         "convert-openmp-to-llvm,"
         "reconcile-unrealized-casts";
}

namespace {

const char *initName(ParameterRole role) {
  switch (role) {
  case ParameterRole::Matrix:
    return "normal";
  case ParameterRole::NormWeight:
    return "ones";
  case ParameterRole::NormBias:
    return "zeros";
  }
  return "normal";
}

LogicalResult writeText(Location loc, llvm::StringRef path,
                        llvm::StringRef text) {
  std::error_code ec;
  llvm::ToolOutputFile file(path, ec, llvm::sys::fs::OF_Text);
  if (ec)
    return emitError(loc) << "cannot write " << path << ": " << ec.message();
  file.os() << text;
  file.keep();
  return success();
}

LogicalResult writeManifest(Location loc, const ModelConfig &config,
                            llvm::ArrayRef<EntryPointSpec> entries,
                            llvm::StringRef path) {
  Manifest manifest;
  manifest.model = config.name;
  manifest.batchSize = config.train.batchSize;
  manifest.seqLen = config.seqLen;
  manifest.vocabSize = config.vocabSize;
  for (const ParameterSpec &spec : listParameters(config))
    manifest.parameters.push_back({spec.name, spec.shape, initName(spec.role),
                                   spec.weightDecay, spec.auxRouter});
  manifest.entryPoints.assign(entries.begin(), entries.end());
  std::string text;
  llvm::raw_string_ostream os(text);
  os << llvm::formatv("{0:2}", toJSON(manifest)) << "\n";
  return writeText(loc, path, text);
}

/// LLVM dialect -> optimized object file for this machine.
LogicalResult emitObject(ModuleOp module, llvm::StringRef objectPath,
                         llvm::StringRef llvmIRPath) {
  Location loc = module.getLoc();
  registerBuiltinDialectTranslation(*module.getContext());
  registerLLVMDialectTranslation(*module.getContext());
  registerOpenMPDialectTranslation(*module.getContext());
  llvm::LLVMContext llvmContext;
  std::unique_ptr<llvm::Module> llvmModule =
      translateModuleToLLVMIR(module, llvmContext);
  if (!llvmModule)
    return emitError(loc) << "translation to LLVM IR failed";

  llvm::InitializeNativeTarget();
  llvm::InitializeNativeTargetAsmPrinter();
  llvm::Triple triple(llvm::sys::getProcessTriple());
  std::string error;
  const llvm::Target *target =
      llvm::TargetRegistry::lookupTarget(triple, error);
  if (!target)
    return emitError(loc) << "no LLVM target for " << triple.str() << ": "
                          << error;
  llvm::SubtargetFeatures features;
  for (const auto &feature : llvm::sys::getHostCPUFeatures())
    features.AddFeature(feature.first(), feature.second);
  std::unique_ptr<llvm::TargetMachine> machine(target->createTargetMachine(
      triple, llvm::sys::getHostCPUName(), features.getString(),
      llvm::TargetOptions(), llvm::Reloc::PIC_, std::nullopt,
      llvm::CodeGenOptLevel::Aggressive));
  llvmModule->setTargetTriple(triple);
  llvmModule->setDataLayout(machine->createDataLayout());

  auto optimize = makeOptimizingTransformer(3, 0, machine.get());
  if (llvm::Error err = optimize(llvmModule.get()))
    return emitError(loc) << "LLVM optimization failed: "
                          << llvm::toString(std::move(err));
  if (!llvmIRPath.empty()) {
    std::string text;
    llvm::raw_string_ostream os(text);
    llvmModule->print(os, nullptr);
    if (failed(writeText(loc, llvmIRPath, text)))
      return failure();
  }

  std::error_code ec;
  llvm::ToolOutputFile object(objectPath, ec, llvm::sys::fs::OF_None);
  if (ec)
    return emitError(loc) << "cannot write " << objectPath << ": "
                          << ec.message();
  llvm::legacy::PassManager codegen;
  if (machine->addPassesToEmitFile(codegen, object.os(), nullptr,
                                   llvm::CodeGenFileType::ObjectFile))
    return emitError(loc) << "the target cannot emit object files";
  codegen.run(*llvmModule);
  object.keep();
  return success();
}

/// Links the object into a shared library with the system compiler driver,
/// with the CPU runtime archive (momart_*: top-k selection) inside, against
/// the OpenMP runtime, OpenBLAS (the GEMMs) and MLIR's C runner utilities
/// (memrefCopy, for copies between strided views). The archive is C++, so
/// the link goes through c++ for its standard library.
LogicalResult linkSharedLibrary(Location loc, llvm::StringRef objectPath,
                                llvm::StringRef libraryPath) {
  llvm::ErrorOr<std::string> driver = llvm::sys::findProgramByName("c++");
  if (!driver)
    return emitError(loc) << "no C++ compiler driver (c++) on PATH to link "
                          << libraryPath;
  std::string libDir = MOMAC_LLVM_LIBRARY_DIR;
  std::string rpath = "-Wl,-rpath," + libDir;
  std::string libFlag = "-L" + libDir;
  llvm::SmallVector<llvm::StringRef> args = {
      *driver,
      "-shared",
      "-o",
      libraryPath,
      objectPath,
      MOMAC_CPU_RUNTIME_ARCHIVE,
      libFlag,
      "-lomp",
      rpath,
      "-lmlir_c_runner_utils",
      "-lopenblas",
      "-lm"};
  std::string message;
  int status = llvm::sys::ExecuteAndWait(*driver, args, std::nullopt, {}, 0, 0,
                                         &message);
  if (status != 0)
    return emitError(loc) << "linking " << libraryPath << " failed (" << status
                          << "): " << message;
  return success();
}

} // namespace

LogicalResult momac::buildCpuArtifact(ModuleOp module,
                                      const ModelConfig &config,
                                      llvm::StringRef descriptionText,
                                      const CpuArtifactOptions &options) {
  Location loc = module.getLoc();
  MLIRContext *context = module.getContext();
  if (std::error_code ec = llvm::sys::fs::create_directories(options.outputDir))
    return emitError(loc) << "cannot create " << options.outputDir << ": "
                          << ec.message();

  // The lowering needs every dialect and pass it names.
  DialectRegistry registry;
  registerAllDialects(registry);
  registerAllExtensions(registry);
  context->appendDialectRegistry(registry);
  context->loadAllAvailableDialects();
  registerAllPasses();
  registerMomacConversionPasses();

  std::vector<EntryPointSpec> entries;
  for (auto func : module.getOps<func::FuncOp>()) {
    if (func.isPrivate())
      continue;
    FailureOr<EntryPointSpec> entry = describeEntryPoint(func);
    if (failed(entry) || failed(resultsToOutParams(func)))
      return failure();
    entries.push_back(*entry);
  }

  PassManager pm(context);
  // Honors --mlir-print-ir-after-all, --mlir-timing, ... where registered.
  if (failed(applyPassManagerCLOptions(pm)))
    return failure();
  if (failed(parsePassPipeline(cpuLoweringPipeline(), pm)))
    return emitError(loc) << "invalid CPU lowering pipeline";
  if (failed(pm.run(module)))
    return failure();
  for (const EntryPointSpec &entry : entries)
    if (failed(addPackedEntryPoint(module, entry.name)))
      return failure();

  llvm::SmallString<256> object(options.outputDir), library(options.outputDir),
      llvmIR(options.outputDir), manifest(options.outputDir),
      description(options.outputDir);
  llvm::sys::path::append(object, "model.o");
  llvm::sys::path::append(library, "model.so");
  llvm::sys::path::append(llvmIR, "model.ll");
  llvm::sys::path::append(manifest, "manifest.json");
  llvm::sys::path::append(description, "model.json");
  if (failed(emitObject(module, object,
                        options.keepLLVMIR ? llvm::StringRef(llvmIR) : "")) ||
      failed(linkSharedLibrary(loc, object, library)) ||
      failed(writeManifest(loc, config, entries, manifest)) ||
      failed(writeText(loc, description, descriptionText)))
    return failure();
  llvm::sys::fs::remove(object);
  return success();
}
