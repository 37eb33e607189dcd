//===- Artifact.cpp - What every target's artifact is made of -------------===//

#include "compiler/Target/Common/Artifact.h"

#include "compiler/Pipelines/Pipelines.h"
#include "compiler/Target/Common/EntryPoints.h"
#include "lib/config/Parameters.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Export.h"

#include "llvm/ADT/ScopeExit.h"
#include "llvm/Bitcode/BitcodeReader.h"
#include "llvm/Bitcode/BitcodeWriter.h"
#include "llvm/IR/Instructions.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/SubtargetFeature.h"
#include "llvm/Transforms/IPO/MergeFunctions.h"
#include "llvm/Transforms/Scalar/DCE.h"
#include "llvm/Transforms/Scalar/InstSimplifyPass.h"
#include "llvm/Transforms/Utils/Cloning.h"
#include "llvm/Transforms/Utils/SplitModule.h"

#include <atomic>
#include <thread>

using namespace mlir;
using namespace momac;

namespace {

/// The kernels are split into this many partitions per code-generation
/// thread (see emitHostObjects).
constexpr unsigned kPartitionsPerThread = 4;

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
                            llvm::StringRef target,
                            llvm::ArrayRef<EntryPointSpec> entries,
                            llvm::ArrayRef<ManifestShardUnit> shardUnits,
                            int64_t shardChunkElements,
                            llvm::StringRef bf16Gemm,
                            llvm::StringRef libraryPath,
                            llvm::StringRef path) {
  Manifest manifest;
  manifest.target = target.str();
  if (config.train.precision == Precision::BF16)
    manifest.bf16Gemm = bf16Gemm.str();
  // momarun checks the library against these before loading it.
  llvm::Expected<std::pair<int64_t, std::string>> fingerprint =
      fingerprintFile(libraryPath);
  if (!fingerprint)
    return emitError(loc) << llvm::toString(fingerprint.takeError());
  manifest.librarySize = fingerprint->first;
  manifest.libraryHash = fingerprint->second;
  manifest.model = config.name;
  manifest.batchSize = config.train.batchSize;
  manifest.seqLen = config.seqLen;
  manifest.vocabSize = config.vocabSize;
  for (const ParameterSpec &spec : listParameters(config))
    manifest.parameters.push_back({spec.name, spec.shape, initName(spec.role),
                                   spec.weightDecay, spec.auxRouter});
  manifest.entryPoints.assign(entries.begin(), entries.end());
  manifest.shardUnits.assign(shardUnits.begin(), shardUnits.end());
  manifest.shardChunkElements = shardChunkElements;
  std::string text;
  llvm::raw_string_ostream os(text);
  os << llvm::formatv("{0:2}", toJSON(manifest)) << "\n";
  return writeText(loc, path, text);
}

/// Removes the argument and result attributes of other dialects (moma.param,
/// moma.result, ...) from the LLVM functions. The entry points were described
/// from them before lowering; left in place, the translation to LLVM IR warns
/// about each one, printing the whole function into a diagnostic nobody
/// reads: that was a third of the compile time.
void dropForeignArgumentAttributes(ModuleOp module) {
  auto foreign = [](NamedAttribute attr) {
    return !attr.getName().getValue().starts_with("llvm.");
  };
  auto keepLLVM = [&](DictionaryAttr dict) -> DictionaryAttr {
    if (!dict || llvm::none_of(dict, foreign))
      return dict;
    SmallVector<NamedAttribute> kept;
    for (NamedAttribute attr : dict)
      if (!foreign(attr))
        kept.push_back(attr);
    return DictionaryAttr::get(module.getContext(), kept);
  };
  module.walk([&](LLVM::LLVMFuncOp func) {
    for (unsigned i = 0; i < func.getNumArguments(); ++i)
      func.setArgAttrs(i, keepLLVM(func.getArgAttrDict(i)));
    for (unsigned i = 0; i < func.getNumResults(); ++i)
      func.setResultAttrs(i, keepLLVM(func.getResultAttrDict(i)));
  });
}

/// A target machine for this host (every feature of its CPU: AVX-512 here).
std::unique_ptr<llvm::TargetMachine> createHostMachine(unsigned optLevel,
                                                       std::string &error) {
  llvm::Triple triple(llvm::sys::getProcessTriple());
  const llvm::Target *target =
      llvm::TargetRegistry::lookupTarget(triple, error);
  if (!target)
    return nullptr;
  llvm::SubtargetFeatures features;
  for (const auto &feature : llvm::sys::getHostCPUFeatures())
    features.AddFeature(feature.first(), feature.second);
  return std::unique_ptr<llvm::TargetMachine>(target->createTargetMachine(
      triple, llvm::sys::getHostCPUName(), features.getString(),
      llvm::TargetOptions(), llvm::Reloc::PIC_, std::nullopt,
      llvm::CodeGenOpt::getLevel(int(optLevel))
          .value_or(llvm::CodeGenOptLevel::Aggressive)));
}

/// Folds the memref descriptors of unoptimized (O0) partitions away: the
/// entry points, and on the CUDA target all host code. In them each
/// descriptor is built field by field (insertvalue) and taken apart again
/// (extractvalue) for every call it is passed to, about 1500 instructions
/// per layer call. Unfolded, they were three quarters of the entry points'
/// instructions, and FastISel leaves aggregates to SelectionDAG, block by
/// block: at 64 layers, @grad's code generation took 3.8 s, 2.5 s folded.
/// InstSimplify and DCE are linear, unlike the O1 pipeline (see
/// emitHostObjects).
void foldDescriptorTraffic(llvm::Module &module, llvm::TargetMachine &machine) {
  llvm::LoopAnalysisManager loops;
  llvm::FunctionAnalysisManager functions;
  llvm::CGSCCAnalysisManager sccs;
  llvm::ModuleAnalysisManager modules;
  llvm::PassBuilder builder(&machine);
  builder.registerModuleAnalyses(modules);
  builder.registerCGSCCAnalyses(sccs);
  builder.registerFunctionAnalyses(functions);
  builder.registerLoopAnalyses(loops);
  builder.crossRegisterProxies(loops, functions, sccs, modules);
  llvm::FunctionPassManager fold;
  fold.addPass(llvm::InstSimplifyPass());
  fold.addPass(llvm::DCEPass());
  llvm::ModulePassManager pipeline;
  pipeline.addPass(llvm::createModuleToFunctionPassAdaptor(std::move(fold)));
  pipeline.run(module, modules);
}

/// IR optimization at `optLevel` for this host, then machine code for
/// `module` into `objectPath` (and the optimized IR into `llvmIRPath` when
/// not empty). Returns an error message, empty on success.
std::string optimizeAndEmit(llvm::Module &module, unsigned optLevel,
                            llvm::StringRef objectPath,
                            llvm::StringRef llvmIRPath) {
  std::string error;
  std::unique_ptr<llvm::TargetMachine> machine =
      createHostMachine(optLevel, error);
  if (!machine)
    return "no LLVM target for this host: " + error;
  module.setTargetTriple(machine->getTargetTriple());
  module.setDataLayout(machine->createDataLayout());
  auto optimize = makeOptimizingTransformer(optLevel, 0, machine.get());
  if (llvm::Error err = optimize(&module))
    return "LLVM optimization failed: " + llvm::toString(std::move(err));
  if (optLevel == 0)
    foldDescriptorTraffic(module, *machine);
  std::error_code ec;
  if (!llvmIRPath.empty()) {
    llvm::ToolOutputFile text(llvmIRPath, ec, llvm::sys::fs::OF_Text);
    if (ec)
      return "cannot write " + llvmIRPath.str() + ": " + ec.message();
    module.print(text.os(), nullptr);
    text.keep();
  }
  llvm::ToolOutputFile object(objectPath, ec, llvm::sys::fs::OF_None);
  if (ec)
    return "cannot write " + objectPath.str() + ": " + ec.message();
  llvm::legacy::PassManager codegen;
  if (machine->addPassesToEmitFile(codegen, object.os(), nullptr,
                                   llvm::CodeGenFileType::ObjectFile))
    return "the target cannot emit object files";
  codegen.run(module);
  object.keep();
  return "";
}

/// Moves the definitions of the entry points (the functions momarun calls)
/// out of `module`, each into a module of its own, which are returned
/// largest first; each module declares what the others define. Local
/// symbols (kernels, constants) become hidden globals, linked by name, as
/// SplitModule makes them across its partitions anyway. The entry points
/// are the module's external definitions: everything else the lowering
/// defines (outlined parallel regions and host loops) is internal.
SmallVector<std::unique_ptr<llvm::Module>>
splitOffEntryPoints(llvm::Module &module) {
  SmallVector<llvm::Function *> entryPoints;
  for (llvm::Function &function : module)
    if (!function.isDeclaration() && function.hasExternalLinkage())
      entryPoints.push_back(&function);
  unsigned unnamed = 0;
  for (llvm::GlobalValue &value : module.global_values()) {
    if (!value.hasLocalLinkage())
      continue;
    if (!value.hasName())
      value.setName("__momac_unnamed." + llvm::Twine(unnamed++));
    value.setLinkage(llvm::GlobalValue::ExternalLinkage);
    value.setVisibility(llvm::GlobalValue::HiddenVisibility);
  }
  llvm::stable_sort(entryPoints, [](llvm::Function *a, llvm::Function *b) {
    return a->getInstructionCount() > b->getInstructionCount();
  });
  SmallVector<std::unique_ptr<llvm::Module>> entryModules;
  for (llvm::Function *entryPoint : entryPoints) {
    llvm::ValueToValueMapTy map;
    entryModules.push_back(
        llvm::CloneModule(module, map, [&](const llvm::GlobalValue *value) {
          return value == entryPoint;
        }));
  }
  for (llvm::Function *function : entryPoints)
    function->deleteBody();
  return entryModules;
}

/// Cuts the basic blocks of `module`'s functions into pieces of at most
/// `maxInstructions` instructions. Instruction selection works a block at a
/// time and grows faster than linearly with a block's length: an entry
/// point is one block of tens of thousands of instructions, and at O0 its
/// instruction selection was 90% of a compile (FastISel gives up on the
/// memref descriptors' insertvalue and hands each remaining instruction to
/// SelectionDAG). Cut, the cost is linear: values live across a cut go
/// through the stack, as at O0 they would anyway.
void cutLongBlocks(llvm::Module &module, unsigned maxInstructions) {
  for (llvm::Function &function : module) {
    SmallVector<llvm::BasicBlock *> blocks;
    for (llvm::BasicBlock &block : function)
      blocks.push_back(&block);
    for (llvm::BasicBlock *block : blocks) {
      // Cut from the back: a split moves what follows the cut into a new
      // block, so each move is one piece, not the rest of the block.
      SmallVector<llvm::Instruction *> cuts;
      unsigned count = 0;
      for (llvm::Instruction &instruction : *block)
        if (++count % maxInstructions == 0 && !isa<llvm::PHINode>(instruction) &&
            !instruction.isEHPad() && !instruction.isTerminator())
          cuts.push_back(&instruction);
      for (llvm::Instruction *cut : llvm::reverse(cuts))
        block->splitBasicBlock(cut);
    }
  }
}

/// LLVM dialect (host code) -> object files for this machine, optimized at
/// `optLevel` (0-3), written as `prefix`.N.o (and, when `keepLLVMIR`,
/// `prefix`.N.ll); returns their paths. The target registers the LLVM IR
/// translations its dialects need (OpenMP, GPU) before this runs.
///
/// Optimization and code generation are most of the compile time, so they
/// run in parallel: the module is split into `partitionCount` partitions
/// (0: one per hardware thread; llvm::SplitModule, as LTO splits its code
/// generation), each optimized and compiled in its own LLVMContext and
/// thread. Little is lost to the split: the CPU's kernels are OpenMP
/// outlined functions, called through the runtime, never inlined into each
/// other (a GPU target's kernels are not host code at all).
///
/// The entry points are partitions of their own, one each, compiled at
/// `entryPointOptLevel`. An entry point is one long function of
/// straight-line host code per step (allocations, size arithmetic, kernel
/// and library calls, all layers one after another), and LLVM's
/// optimization, instruction selection, scheduling and register allocation
/// above O0 grow faster than linearly with a function's length: on a
/// 14-layer model they were 7.6 s of 8.5 s of code generation. Its loops
/// are functions of their own by then (OutlineHostLoops), optimized with the
/// kernels; what is left runs once per step (0.03% of a step's time).
FailureOr<SmallVector<std::string>>
emitHostObjects(ModuleOp module, llvm::StringRef prefix, bool keepLLVMIR,
                unsigned partitionCount, unsigned optLevel,
                unsigned entryPointOptLevel, TimingScope &timing) {
  Location loc = module.getLoc();
  TimingScope translateTimer = timing.nest("translate to LLVM IR");
  dropForeignArgumentAttributes(module);
  registerBuiltinDialectTranslation(*module.getContext());
  registerLLVMDialectTranslation(*module.getContext());
  llvm::LLVMContext llvmContext;
  std::unique_ptr<llvm::Module> llvmModule =
      translateModuleToLLVMIR(module, llvmContext);
  if (!llvmModule)
    return emitError(loc) << "translation to LLVM IR failed";
  translateTimer.stop();

  // The layers of a model share their kernels' code: each kernel is an
  // outlined function whose shapes are constants and whose buffers are
  // arguments, so the copies that L layers make of it are identical.
  // LLVM's MergeFunctions keeps one of each before the expensive part.
  // OpenMP passes each region to the runtime by address; nothing compares
  // those addresses, so they may be shared (unnamed_addr), which lets
  // MergeFunctions replace a copy instead of keeping it as a thunk.
  TimingScope mergeTimer = timing.nest("merge identical kernels");
  for (llvm::Function &function : *llvmModule)
    if (function.hasLocalLinkage())
      function.setUnnamedAddr(llvm::GlobalValue::UnnamedAddr::Global);
  llvm::MergeFunctionsPass::runOnModule(*llvmModule);
  mergeTimer.stop();

  TimingScope splitTimer = timing.nest("split into partitions");
  llvm::InitializeNativeTarget();
  llvm::InitializeNativeTargetAsmPrinter();
  unsigned threads = partitionCount
                         ? partitionCount
                         : std::max(1u, std::thread::hardware_concurrency());
  // Partitions cross threads as bitcode: an LLVMContext is single-threaded.
  std::vector<llvm::SmallString<0>> partitions;
  std::vector<unsigned> levels;
  auto addPartition = [&](const llvm::Module &part, unsigned at) {
    llvm::raw_svector_ostream os(partitions.emplace_back());
    llvm::WriteBitcodeToFile(part, os);
    levels.push_back(at);
  };
  // One partition per entry point, so that @grad, the longest, compiles
  // beside the others instead of after them.
  for (std::unique_ptr<llvm::Module> &entryModule :
       splitOffEntryPoints(*llvmModule)) {
    cutLongBlocks(*entryModule, 256);
    addPartition(*entryModule, entryPointOptLevel);
  }
  llvm::SplitModule(*llvmModule, kPartitionsPerThread * threads,
                    [&](std::unique_ptr<llvm::Module> part) {
                      addPartition(*part, optLevel);
                    });
  llvmModule.reset();
  splitTimer.stop();

  TimingScope codegenTimer =
      timing.nest("LLVM optimization + code generation (parallel)");
  SmallVector<std::string> paths;
  std::vector<std::string> failures(partitions.size());
  for (unsigned part = 0; part < partitions.size(); ++part)
    paths.push_back((prefix + "." + llvm::Twine(part) + ".o").str());
  // `threads` workers take the partitions in turn: there are more
  // partitions than threads, so that one large partition does not leave
  // the other threads idle.
  std::atomic<unsigned> next = 0;
  auto work = [&] {
    for (unsigned part = next++; part < partitions.size(); part = next++) {
      std::string irPath =
          keepLLVMIR ? (prefix + "." + llvm::Twine(part) + ".ll").str() : "";
      llvm::LLVMContext context;
      llvm::Expected<std::unique_ptr<llvm::Module>> partModule =
          llvm::parseBitcodeFile(
              llvm::MemoryBufferRef(partitions[part], "partition"), context);
      if (!partModule)
        failures[part] = llvm::toString(partModule.takeError());
      else
        failures[part] =
            optimizeAndEmit(**partModule, levels[part], paths[part], irPath);
    }
  };
  std::vector<std::thread> workers;
  for (unsigned thread = 0; thread < threads; ++thread)
    workers.emplace_back(work);
  for (std::thread &worker : workers)
    worker.join();
  for (const std::string &failure : failures)
    if (!failure.empty())
      return emitError(loc) << failure;
  return paths;
}

/// Links `objectPaths` into the shared library `libraryPath` with the system
/// C++ driver, followed by `linkArguments` (the target's runtime archive and
/// libraries).
LogicalResult
linkSharedLibrary(Location loc, llvm::ArrayRef<std::string> objectPaths,
                         llvm::StringRef libraryPath,
                         llvm::ArrayRef<std::string> linkArguments) {
  // The runtime archives are C++, so the link goes through c++ for its
  // standard library.
  llvm::ErrorOr<std::string> driver = llvm::sys::findProgramByName("c++");
  if (!driver)
    return emitError(loc) << "no C++ compiler driver (c++) on PATH to link "
                          << libraryPath;
  // --no-undefined: a symbol neither the objects nor the libraries define
  // fails here, not at its first call on the machine that runs the step.
  llvm::SmallVector<llvm::StringRef> args = {
      *driver, "-shared", "-Wl,--no-undefined", "-o", libraryPath};
  args.append(objectPaths.begin(), objectPaths.end());
  for (const std::string &argument : linkArguments)
    args.push_back(argument);
#ifdef MOMAC_RUNTIME_SANITIZERS
  args.push_back(MOMAC_RUNTIME_SANITIZERS);
#endif
  std::string message;
  int status = llvm::sys::ExecuteAndWait(*driver, args, std::nullopt, {}, 0, 0,
                                         &message);
  if (status != 0)
    return emitError(loc) << "linking " << libraryPath << " failed (" << status
                          << "): " << message;
  return success();
}

/// The lowering needs every dialect and pass it names.
void loadLoweringDialects(MLIRContext *context) {
  DialectRegistry registry;
  registerAllDialects(registry);
  registerAllExtensions(registry);
  context->appendDialectRegistry(registry);
  context->loadAllAvailableDialects();
}


/// The entry points of `module` (its public functions) described for the
/// manifest, their results turned into out-parameters (the artifact's ABI).
FailureOr<std::vector<EntryPointSpec>> prepareEntryPoints(ModuleOp module) {
  std::vector<EntryPointSpec> entries;
  for (auto func : module.getOps<func::FuncOp>()) {
    if (func.isPrivate())
      continue;
    FailureOr<EntryPointSpec> entry = describeEntryPoint(func);
    if (failed(entry) || failed(resultsToOutParams(func)))
      return failure();
    entries.push_back(*entry);
  }
  return entries;
}

/// Writes manifest.json (with the library's fingerprint) and model.json.
LogicalResult writeManifestAndDescription(
    Location loc, const ModelConfig &config, llvm::StringRef target,
    llvm::ArrayRef<EntryPointSpec> entries,
    llvm::ArrayRef<ManifestShardUnit> shardUnits, int64_t shardChunkElements,
    llvm::StringRef bf16Gemm, llvm::StringRef outputDir,
    llvm::StringRef descriptionText) {
  llvm::SmallString<256> library(outputDir), manifest(outputDir),
      description(outputDir);
  llvm::sys::path::append(library, "model.so");
  llvm::sys::path::append(manifest, "manifest.json");
  llvm::sys::path::append(description, "model.json");
  if (failed(writeManifest(loc, config, target, entries, shardUnits,
                           shardChunkElements, bf16Gemm, library, manifest)) ||
      failed(writeText(loc, description, descriptionText)))
    return failure();
  return success();
}

} // namespace

SharedLoweringOptions
momac::sharedLoweringOptions(const ArtifactOptions &options,
                             const TargetBackend &target) {
  SharedLoweringOptions shared;
  shared.outlineLayers = options.outlineLayers;
  shared.gemmOperandsInF32 = target.gemmOperandsInF32;
  return shared;
}

LogicalResult
momac::lowerThroughSharedPipeline(ModuleOp module,
                                  const SharedLoweringOptions &options) {
  loadLoweringDialects(module.getContext());
  if (failed(prepareEntryPoints(module)))
    return failure();
  PassManager pm(module.getContext());
  // MLIR's pass manager flags (--mlir-print-ir-after-all, ...) apply here
  // as they do when compiling an artifact.
  if (failed(applyPassManagerCLOptions(pm)))
    return failure();
  addSharedLoweringPasses(pm, options);
  return pm.run(module);
}

LogicalResult momac::buildArtifact(ModuleOp module, const ModelConfig &config,
                                   llvm::StringRef descriptionText,
                                   const ArtifactOptions &options,
                                   const TargetBackend &target) {
  Location loc = module.getLoc();
  MLIRContext *context = module.getContext();
  if (std::error_code ec = llvm::sys::fs::create_directories(options.outputDir))
    return emitError(loc) << "cannot create " << options.outputDir << ": "
                          << ec.message();
  if (target.registerDialects) {
    DialectRegistry registry;
    target.registerDialects(registry);
    context->appendDialectRegistry(registry);
  }
  loadLoweringDialects(context);
  std::vector<ManifestShardUnit> shardUnits = describeShardUnits(module);
  int64_t shardChunkElements = 0;
  if (auto norm = module.lookupSymbol<func::FuncOp>("fsdp_grad_norm"))
    shardChunkElements =
        cast<RankedTensorType>(norm.getArgument(0).getType()).getNumElements();
  FailureOr<std::vector<EntryPointSpec>> entries = prepareEntryPoints(module);
  if (failed(entries))
    return failure();

  TimingScope disabled;
  TimingScope &timing = options.timing ? *options.timing : disabled;
  PassManager pm(context);
  pm.enableVerifier(options.verifyEachPass);
  // Honors --mlir-print-ir-after-all, ... where registered.
  if (failed(applyPassManagerCLOptions(pm)))
    return failure();
  TimingScope loweringTimer =
      timing.nest(llvm::StringRef(target.name).upper() +
                  " lowering (MLIR passes)");
  pm.enableTiming(loweringTimer);
  addSharedLoweringPasses(pm, sharedLoweringOptions(options, target));
  target.addCodegenPasses(pm);
  if (failed(pm.run(module)) || failed(verify(module)))
    return failure();
  for (const EntryPointSpec &entry : *entries)
    if (failed(addPackedEntryPoint(module, entry.name)))
      return failure();
  loweringTimer.stop();
  if (target.finishModule) {
    TimingScope finishTimer = timing.nest(target.finishPhase);
    if (failed(target.finishModule(module, options.outputDir)))
      return failure();
  }

  llvm::SmallString<256> objectPrefix(options.outputDir),
      library(options.outputDir);
  llvm::sys::path::append(objectPrefix, "model");
  llvm::sys::path::append(library, "model.so");
  FailureOr<SmallVector<std::string>> objects =
      emitHostObjects(module, objectPrefix, options.keepLLVMIR,
                      /*partitions=*/0, target.hostOptLevel,
                      target.entryPointOptLevel, timing);
  if (failed(objects))
    return failure();
  TimingScope linkTimer = timing.nest("link model.so");
  llvm::scope_exit removeObjects([&] {
    for (const std::string &object : *objects)
      llvm::sys::fs::remove(object);
  });
  if (failed(linkSharedLibrary(loc, *objects, library, target.linkArguments)) ||
      failed(writeManifestAndDescription(
          loc, config, target.name, *entries, shardUnits, shardChunkElements,
          target.bf16GemmDescription, options.outputDir, descriptionText)))
    return failure();
  return success();
}
