//===- momac.cpp - The MoMa model compiler driver -------------------------===//
//
//   momac MODEL.json                      validate the description
//   momac MODEL.json --report [--json]    sizes, FLOPs and memory
//   momac MODEL.json --emit=moma          the forward pass in the moma dialect
//   momac MODEL.json --stats              kernels, GEMMs, top-k and bytes of
//                                         a training step
//   momac MODEL.json -o OUT/ [--time]     compile the artifact for --target
//     [--target=cpu|cuda|cuda-emulated]   (default cpu): OUT/model.so,
//                                         OUT/manifest.json, OUT/model.json
//
// A bad description is reported as one line, "FILE: error: PATH: MESSAGE",
// with exit code 1. Internal errors (IR that fails to verify) exit with 2.
//
//===----------------------------------------------------------------------===//

#include "compiler/Analysis/StepStatistics.h"
#include "compiler/Autodiff/Passes.h"
#include "compiler/Codegen/Passes.h"
#include "compiler/Conversion/Passes.h"
#include "compiler/Frontend/ModelToMoma.h"
#include "compiler/Pipelines/Pipelines.h"
#include "compiler/Target/CPU/CpuTarget.h"
#include "compiler/Target/CPU/Passes.h"
#include "compiler/Target/CUDA/CudaTarget.h"
#include "dialects/moma/Transforms/Passes.h"
#include "lib/config/ModelConfig.h"
#include "lib/config/ModelStats.h"
#include "lib/config/Parameters.h"
#include "lib/support/Escape.h"
#include "tools/momac/Report.h"

#include "mlir/IR/AsmState.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Support/Timing.h"
#include "llvm/ADT/Statistic.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/ErrorHandling.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/WithColor.h"

using namespace momac;
namespace cl = llvm::cl;

namespace {

enum class EmitKind { None, Moma, MomaFrontend };

cl::OptionCategory momacCategory("momac options");

cl::opt<std::string> inputPath(cl::Positional, cl::Required,
                               cl::desc("<model.json>"),
                               cl::cat(momacCategory));

cl::opt<bool> report("report",
                     cl::desc("Print parameters, FLOPs per token and the "
                              "memory of a training step"),
                     cl::cat(momacCategory));

cl::opt<bool> reportJson("json",
                         cl::desc("With --report: print the report as JSON"),
                         cl::cat(momacCategory));

cl::opt<EmitKind> emit(
    "emit", cl::desc("Print IR of the forward pass"), cl::init(EmitKind::None),
    cl::values(clEnumValN(EmitKind::Moma, "moma",
                          "moma dialect after the model-level passes "
                          "(modality partition reuse)"),
               clEnumValN(EmitKind::MomaFrontend, "moma-frontend",
                          "moma dialect as the front end builds it, before "
                          "any pass")),
    cl::cat(momacCategory));

cl::opt<std::string>
    outputPath("o",
               cl::desc("With --report or --emit: the output file (default: "
                        "stdout). Alone: the artifact directory to compile "
                        "into (model.so, manifest.json, model.json)"),
               cl::value_desc("path"), cl::init("-"), cl::cat(momacCategory));

enum class TargetKind { Cpu, Cuda, CudaEmulated };

cl::opt<TargetKind> target(
    "target", cl::desc("What the artifact (-o DIR) runs on"),
    cl::init(TargetKind::Cpu),
    cl::values(clEnumValN(TargetKind::Cpu, "cpu",
                          "this machine's CPU: BLAS/oneDNN GEMMs, OpenMP, its "
                          "vector ISA (default)"),
               clEnumValN(TargetKind::Cuda, "cuda",
                          "NVIDIA GPUs of compute capability 9.0 (H100, "
                          "H200): kernels as an sm_90 cubin plus PTX, cuBLAS "
                          "GEMMs; needs a momac built with CUDA"),
               clEnumValN(TargetKind::CudaEmulated, "cuda-emulated",
                          "for testing: the CUDA target's mapping (blocks, "
                          "threads, GEMM calls, host reads) run on this CPU, "
                          "as a CPU artifact")),
    cl::cat(momacCategory));

cl::opt<double> gpuMemory(
    "gpu-memory",
    cl::desc("With --target=cuda: the GPU memory, in GB, the training step "
             "must fit (default 141, an H200's); a model whose parameters, "
             "gradients and AdamW state (momac --report) need more is "
             "refused at compile time"),
    cl::value_desc("GB"), cl::init(141.0), cl::cat(momacCategory));

cl::opt<int64_t> reportRanks(
    "ranks",
    cl::desc("With --report: also predict what each of R FSDP ranks holds "
             "(its shards of parameters, gradients and AdamW state, and the "
             "gathered units), as momarun reports it"),
    cl::value_desc("R"), cl::init(1), cl::cat(momacCategory));

cl::opt<bool> fsdp(
    "fsdp",
    cl::desc("With an artifact: also compile the fully sharded (FSDP) step "
             "that `mpirun -np R momarun train` runs on R ranks, for any R: "
             "each layer's parameters gathered around their use, gradients "
             "reduce-scattered, AdamW on each rank's shard "
             "(entry points fsdp_grad, fsdp_grad_norm, fsdp_adamw_*); with "
             "--target=cuda the ranks' collectives are NCCL, which the "
             "artifact then carries"),
    cl::cat(momacCategory));

cl::opt<bool> keepLLVMIR("keep-llvm-ir",
                         cl::desc("With an artifact: also write the optimized "
                                  "LLVM IR, as model.N.ll (one file per "
                                  "code-generation partition)"),
                         cl::cat(momacCategory));

cl::opt<bool> verifyEach(
    "verify-each",
    cl::desc("With an artifact: verify the IR after every lowering pass, "
             "naming the pass that broke it (by default it is verified once, "
             "after the last pass; this makes the lowering about a quarter "
             "slower)"),
    cl::cat(momacCategory));

cl::opt<CpuBf16Gemm> cpuBf16Gemm(
    "cpu-bf16-gemm",
    cl::desc("With --target=cpu and train.precision \"bf16\": how the "
             "GEMMs run (the products are those of bf16-rounded operands "
             "either way, summed in f32)"),
    cl::init(CpuBf16Gemm::Auto),
    cl::values(clEnumValN(CpuBf16Gemm::Auto, "auto",
                          "f32, unless this CPU has AMX-BF16 (default)"),
               clEnumValN(CpuBf16Gemm::Bf16, "bf16",
                          "bf16 operands and the runtime's bf16 GEMM "
                          "(oneDNN, or sgemm on widened copies where a "
                          "start-up measurement finds that faster)"),
               clEnumValN(CpuBf16Gemm::F32, "f32",
                          "operands rounded to bf16 but kept in f32, and "
                          "OpenBLAS's sgemm: no copies to widen")),
    cl::cat(momacCategory));

cl::opt<bool> outlineLayers(
    "outline-layers", cl::init(true),
    cl::desc("Compile each kind of layer once: its forward, backward and "
             "optimizer update become functions that every layer of that "
             "kind calls (=false compiles every layer's code again, to "
             "compare compile time or results)"),
    cl::cat(momacCategory));

/// --stats is LLVM's own flag (its pass statistics, which momac's release
/// build of LLVM does not collect), given momac's meaning in main().
constexpr const char *kStatsHelp =
    "Print what one training step runs after fusion and tiling: kernels, "
    "library calls (GEMMs, top-k), copies and an estimate of the bytes they "
    "move, per entry point and per layer";
bool printStats = false;

cl::opt<bool> printTime(
    "time",
    cl::desc("Print the time of each compilation phase (front end, moma "
             "passes, lowering passes, LLVM, link) when done; the same as "
             "MLIR's --mlir-timing"),
    cl::cat(momacCategory));

/// Prints "FILE: error: MESSAGE" with the control characters of both
/// escaped: the file name and the description's keys are user input.
int fail(const llvm::Twine &message, int code = 1) {
  llvm::WithColor::error(llvm::errs(), escapeControlCharacters(inputPath))
      << escapeControlCharacters(message.str()) << "\n";
  return code;
}

/// The backend of --target: its passes and link, and what it asks of the
/// front end.
TargetBackend selectedTargetBackend() {
  switch (target) {
  case TargetKind::Cpu:
    return cpuTargetBackend(cpuBf16Gemm);
  case TargetKind::CudaEmulated:
    return cudaEmulatedTargetBackend();
  case TargetKind::Cuda:
    // The sharded step's entry points (MomaSynthesizeShardedStep) are
    // there exactly with --fsdp.
    return cudaTargetBackend(/*shardedStep=*/fsdp);
  }
  llvm_unreachable("a --target without a backend");
}

/// The training step in the moma dialect: the forward pass from the front
/// end, its gradient and the optimizer step, with MoD groups padded as
/// `backend` asks. Null after an error (printed).
mlir::OwningOpRef<mlir::ModuleOp> buildTrainStep(mlir::MLIRContext &context,
                                                 const ModelConfig &config,
                                                 const TargetBackend &backend,
                                                 mlir::TimingScope &timing) {
  mlir::TimingScope frontEndTimer = timing.nest("front end (model -> moma)");
  const bool padModGroups = backend.padsModGroups;
  mlir::OwningOpRef<mlir::ModuleOp> module =
      buildForwardModule(context, config, inputPath, /*dynamicBatch=*/true,
                         ForwardKind::Training, padModGroups);
  // Models with auxiliary routers also get @forward_causal, the forward
  // pass with causal routing (momarun eval --causal), @forward_aux, the
  // objective that trains the auxiliary routers (momarun train-aux), and
  // @decode_step, one token of causal decoding, and @prefill, a prompt's
  // tokens in one call (momarun generate).
  if (config.auxRouters)
    for (ForwardKind kind :
         {ForwardKind::CausalRouting, ForwardKind::AuxRouterTraining,
          ForwardKind::Decode, ForwardKind::Prefill}) {
      mlir::OwningOpRef<mlir::ModuleOp> extra = buildForwardModule(
          context, config, inputPath, /*dynamicBatch=*/true, kind,
          padModGroups);
      for (mlir::Operation &op :
           llvm::make_early_inc_range(extra->getBody()->getOperations()))
        op.moveBefore(module->getBody(), module->getBody()->end());
    }
  if (mlir::failed(mlir::verify(*module))) {
    fail("internal error: the front end built invalid IR", 2);
    return nullptr;
  }
  frontEndTimer.stop();
  // The artifact holds @forward, its gradient @grad and @optimizer_step.
  mlir::PassManager pm(&context);
  if (mlir::failed(mlir::applyPassManagerCLOptions(pm))) {
    fail("invalid pass manager options", 1);
    return nullptr;
  }
  mlir::TimingScope momaTimer = timing.nest("moma passes (autodiff, optimizer)");
  pm.enableTiming(momaTimer);
  TrainingStepOptions step;
  step.adamW = {config.train.beta1, config.train.beta2, config.train.eps,
                config.train.weightDecay, config.train.gradClip};
  step.shardedStep = fsdp;
  step.auxRouterSteps = config.auxRouters;
  addTrainingStepPasses(pm, step);
  if (mlir::failed(pm.run(*module))) {
    fail("internal error: a moma pass failed", 2);
    return nullptr;
  }
  return module;
}

/// Compiles the training step into an artifact of `backend` in the -o
/// directory.
int compileArtifact(const ModelConfig &config, const TargetBackend &backend,
                    mlir::TimingScope &timing) {
  auto description = llvm::MemoryBuffer::getFileOrSTDIN(inputPath);
  if (!description)
    return fail("cannot read the model description");
  mlir::DialectRegistry registry;
  registerUpstreamVJPModels(registry);
  mlir::MLIRContext context(registry);
  mlir::OwningOpRef<mlir::ModuleOp> module =
      buildTrainStep(context, config, backend, timing);
  if (!module)
    return 2;
  ArtifactOptions options;
  options.outputDir = outputPath;
  options.keepLLVMIR = keepLLVMIR;
  options.verifyEachPass = verifyEach;
  options.outlineLayers = outlineLayers;
  options.timing = &timing;
  bool cuda = target == TargetKind::Cuda;
  if (mlir::failed(buildArtifact(*module, config, (*description)->getBuffer(),
                                 options, backend)))
    return fail(cuda ? "compiling the CUDA artifact failed"
                     : "compiling the artifact failed",
                2);
  if (cuda)
    llvm::outs() << "wrote " << outputPath << "/model.so (sm_90 kernels "
                 << "embedded), manifest.json, model.json, kernels.ptx, "
                 << "kernels.ptxas.txt\n";
  else
    llvm::outs() << "wrote " << outputPath << "/model.so, manifest.json, "
                 << "model.json\n";
  return 0;
}

/// --stats: the kernels of each entry point after the shared pipeline, of
/// the step `backend` would compile.
int printStepStatistics(const ModelConfig &config,
                        const TargetBackend &backend, llvm::raw_ostream &os) {
  mlir::DialectRegistry registry;
  registerUpstreamVJPModels(registry);
  mlir::MLIRContext context(registry);
  mlir::TimingScope disabled;
  mlir::OwningOpRef<mlir::ModuleOp> module =
      buildTrainStep(context, config, backend, disabled);
  if (!module)
    return 2;
  ArtifactOptions options;
  options.outlineLayers = outlineLayers;
  if (mlir::failed(lowerThroughSharedPipeline(
          *module, sharedLoweringOptions(options, backend))))
    return fail("internal error: lowering for --stats failed", 2);
  int64_t tokens = config.train.batchSize * config.seqLen;
  int64_t groups = config.moe ? int64_t(config.moe->groups.size()) : 1;
  auto stats = collectStepStatistics(*module, tokens, config.train.batchSize,
                                     groups);
  printStatistics(os, config, stats, tokens);
  return 0;
}

/// Registers MLIR's options and momac's passes, and gives LLVM's --stats
/// momac's meaning; --help then lists momac's own options.
void registerOptions() {
  mlir::registerAsmPrinterCLOptions();
  mlir::registerMLIRContextCLOptions();
  // momac's own passes, by name (before the pass manager's options, which
  // list the registered ones), for --mlir-print-ir-after=<pass> and the
  // like (upstream passes are named only once their pipeline builds them).
  mlir::moma::registerMomaPasses();
  registerMomacConversionPasses();
  registerMomacCodegenPasses();
  registerMomacCpuTargetPasses();
  registerMomacCudaTargetPasses();
  registerMomacAutodiffPasses();
  mlir::registerPassManagerCLOptions();
  mlir::registerDefaultTimingManagerCLOptions();
  // libLLVM registers hundreds of backend flags; --help lists momac's own.
  // Its --stats (LLVM's pass statistics) becomes momac's step statistics;
  // LLVM registers it while hiding the others.
  cl::HideUnrelatedOptions(momacCategory);
  auto &options = cl::getRegisteredOptions();
  if (auto stats = options.find("stats"); stats != options.end()) {
    stats->second->setDescription(kStatsHelp);
    stats->second->addCategory(momacCategory);
    stats->second->setHiddenFlag(cl::NotHidden);
  }
}

/// Flags given where they do not apply; 0 when there are none.
int checkFlagCombinations() {
  if (keepLLVMIR && (report || printStats || emit != EmitKind::None ||
                     outputPath == "-"))
    return fail("--keep-llvm-ir only applies when compiling an artifact "
                "(-o DIR, without --report, --stats or --emit)");
  if (reportJson && !report)
    return fail("--json only applies to --report");
  if (reportRanks < 1)
    return fail("--ranks must be at least 1");
  if (reportRanks.getNumOccurrences() && !report)
    return fail("--ranks only applies to --report");
  return 0;
}

/// --target=cuda is refused before anything is compiled where this momac
/// cannot build CUDA artifacts, or where the state that lives on the GPU
/// for the whole run does not fit its memory; 0 when it can go on.
int checkCudaTarget(const ModelConfig &config) {
  ModelStats stats = computeModelStats(config);
  double needed = double(stats.totalStateBytes()) / 1e9;
  if (gpuMemory <= 0)
    return fail(llvm::formatv("--gpu-memory {0}: expected a positive "
                              "number of GB",
                              double(gpuMemory)));
  if (needed > gpuMemory)
    return fail(llvm::formatv(
        "--target=cuda: the training step keeps {0:F1} GB on the GPU "
        "(parameters {1:F1}, gradients {2:F1}, AdamW state {3:F1}; momac "
        "--report), more than --gpu-memory {4} GB; shard it over several "
        "GPUs (FSDP) or pick a smaller model",
        needed, double(stats.parameterBytes) / 1e9,
        double(stats.gradientBytes) / 1e9, double(stats.optimizerBytes) / 1e9,
        double(gpuMemory)));
  std::string why;
  if (!cudaTargetAvailable(why))
    return fail("--target=cuda: " + why);
  return 0;
}

/// --emit: the forward pass as the front end builds it, or after the
/// model-level passes.
int emitForwardPass(const ModelConfig &config, llvm::raw_ostream &os) {
  mlir::MLIRContext context;
  mlir::OwningOpRef<mlir::ModuleOp> module =
      buildForwardModule(context, config, inputPath);
  if (mlir::failed(mlir::verify(*module)))
    return fail("internal error: the front end built invalid IR", 2);
  if (emit == EmitKind::Moma) {
    mlir::PassManager pm(&context);
    if (mlir::failed(mlir::applyPassManagerCLOptions(pm)))
      return fail("invalid pass manager options", 1);
    buildMomaOptimizationPipeline(pm);
    if (mlir::failed(pm.run(*module)))
      return fail("internal error: a moma pass failed", 2);
  }
  module->print(os);
  os << "\n";
  return 0;
}

/// No action flag: the description is valid; say what it describes.
void printValidated(const ModelConfig &config, llvm::raw_ostream &os) {
  int64_t params = 0;
  for (const ParameterSpec &spec : listParameters(config))
    params += spec.numElements();
  os << inputPath << ": ok: " << config.name << ", " << config.nLayers
     << " layers, " << params << " parameters\n";
}

} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  registerOptions();
  cl::ParseCommandLineOptions(
      argc, argv,
      "momac: compiles MoMa model descriptions (modality-aware experts with "
      "expert choice and mixture-of-depths)\n\n"
      "With no action flag, momac only validates the description. The schema "
      "is\nshared/MODEL_SPEC.md section 1; every error names the JSON path.\n"
      "MLIR's printing and pass-manager flags (--mlir-print-debuginfo,\n"
      "--mlir-timing, --mlir-print-ir-after-all, ...) work too; --help-hidden "
      "lists them.\n");

  printStats = llvm::AreStatisticsEnabled();
  if (int error = checkFlagCombinations())
    return error;

  llvm::Expected<ModelConfig> config = loadModelConfig(inputPath);
  if (!config)
    return fail(llvm::toString(config.takeError()));
  if (target == TargetKind::Cuda)
    if (int error = checkCudaTarget(*config))
      return error;
  TargetBackend backend = selectedTargetBackend();

  if (!report && !printStats && emit == EmitKind::None && outputPath != "-") {
    // --time and --mlir-timing print one tree of the phases when the
    // manager goes out of scope, after the artifact is written.
    mlir::DefaultTimingManager timingManager;
    mlir::applyDefaultTimingManagerCLOptions(timingManager);
    if (printTime)
      timingManager.setEnabled(true);
    mlir::TimingScope timing = timingManager.getRootScope();
    return compileArtifact(*config, backend, timing);
  }

  std::string error;
  std::unique_ptr<llvm::ToolOutputFile> output =
      mlir::openOutputFile(outputPath, &error);
  if (!output) {
    llvm::WithColor::error(llvm::errs(), "momac")
        << escapeControlCharacters(error) << "\n";
    return 1;
  }
  llvm::raw_ostream &os = output->os();
  if (printStats)
    if (int error = printStepStatistics(*config, backend, os))
      return error;
  if (report) {
    ModelStats stats = computeModelStats(*config);
    if (reportJson)
      printReportJson(os, *config, stats, reportRanks);
    else
      printReport(os, *config, stats, reportRanks);
  }
  if (emit != EmitKind::None)
    if (int error = emitForwardPass(*config, os))
      return error;
  if (!report && !printStats && emit == EmitKind::None)
    printValidated(*config, os);
  output->keep();
  return 0;
}
