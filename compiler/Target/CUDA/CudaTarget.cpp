//===- CudaTarget.cpp - The CUDA target's backends ------------------------===//

#include "compiler/Target/CUDA/CudaTarget.h"

#include "compiler/Target/Common/CpuRuntime.h"

#include "mlir/Dialect/GPU/IR/CompilationInterfaces.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/LLVM/NVVM/Target.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"

#include "llvm/ADT/ScopeExit.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/Regex.h"
#include "llvm/Support/ToolOutputFile.h"

using namespace mlir;
using namespace momac;

TargetBackend momac::cudaEmulatedTargetBackend() {
  TargetBackend emulated;
  emulated.name = "cuda-emulated";
  emulated.addCodegenPasses = [](OpPassManager &pm) {
    addCudaEmulationPasses(pm);
  };
  emulated.hostOptLevel = 2;
  // The step is the CUDA target's, padded MoD groups included.
  emulated.padsModGroups = true;
  // The CUDA runtime's interface, over host memory
  // (runtime/device/cpu/CudaEmulation.cpp), which nothing in the step
  // calls: momarun looks it up as in a CUDA artifact.
  emulated.linkArguments = {"-Wl,--undefined=momart_cuda_status"};
  llvm::append_range(emulated.linkArguments, cpuLinkArguments());
  return emulated;
}

#ifndef MOMAC_CUDA_TOOLKIT_DIR

bool momac::cudaTargetAvailable(std::string &why) {
  why = "this momac was built without CUDA (no CUDA toolkit was found when "
        "it was configured); rebuild it where CUDA is installed to compile "
        "for NVIDIA GPUs";
  return false;
}

TargetBackend momac::cudaTargetBackend(bool,
                                       const CudaCodegenOptions &codegen) {
  TargetBackend cuda;
  cuda.name = "cuda";
  cuda.addCodegenPasses = [codegen](OpPassManager &pm) {
    addCudaCodegenPasses(pm, codegen);
  };
  cuda.finishModule = [](ModuleOp module, llvm::StringRef) -> LogicalResult {
    std::string why;
    cudaTargetAvailable(why);
    return emitError(module.getLoc()) << why;
  };
  cuda.finishPhase = "kernels: NVPTX, ptxas, fatbinary";
  cuda.padsModGroups = true;
  return cuda;
}

#else

bool momac::cudaTargetAvailable(std::string &) { return true; }

namespace {

/// Runs `program` with `args`, its output (stdout and stderr) into
/// `outputPath`.
LogicalResult runTool(Location loc, llvm::StringRef program,
                      llvm::ArrayRef<std::string> args,
                      llvm::StringRef outputPath) {
  llvm::SmallVector<llvm::StringRef> argv = {program};
  for (const std::string &arg : args)
    argv.push_back(arg);
  std::optional<llvm::StringRef> redirects[] = {std::nullopt, outputPath,
                                                outputPath};
  std::string message;
  int status = llvm::sys::ExecuteAndWait(program, argv, std::nullopt,
                                         redirects, 0, 0, &message);
  if (status == 0)
    return success();
  auto output = llvm::MemoryBuffer::getFile(outputPath);
  return emitError(loc) << llvm::sys::path::filename(program) << " failed ("
                        << status << "): " << message
                        << (output ? (*output)->getBuffer() : "");
}

/// Checks ptxas's report (`ptxas -v`): a kernel that spills registers to
/// local memory is a compile error, since every kernel here is small
/// enough not to.
LogicalResult checkNoSpills(Location loc, llvm::StringRef report) {
  llvm::Regex spill("([0-9]+) bytes spill stores, ([0-9]+) bytes spill loads");
  llvm::Regex function("Compiling entry function '([^']+)'");
  llvm::StringRef kernel = "?";
  llvm::SmallVector<llvm::StringRef> lines;
  report.split(lines, '\n');
  for (llvm::StringRef line : lines) {
    llvm::SmallVector<llvm::StringRef> match;
    if (function.match(line, &match))
      kernel = match[1];
    else if (spill.match(line, &match) &&
             (match[1] != "0" || match[2] != "0"))
      return emitError(loc) << "kernel " << kernel << " spills registers ("
                            << match[1] << " bytes stored, " << match[2]
                            << " loaded; see kernels.ptxas.txt)";
  }
  return success();
}

/// Replaces every gpu.module with a gpu.binary holding one fatbinary: the
/// cubin for the chip (ptxas, whose register and spill report is kept as
/// kernels.ptxas.txt) and the PTX (kernels.ptx), which a newer driver can
/// compile for a GPU the cubin does not run on.
LogicalResult serializeKernels(ModuleOp module, llvm::StringRef outputDir,
                               const CudaCodegenOptions &codegen) {
  std::string toolkit = MOMAC_CUDA_TOOLKIT_DIR;
  llvm::SmallString<256> ptxas(toolkit), fatbinary(toolkit);
  llvm::sys::path::append(ptxas, "bin", "ptxas");
  llvm::sys::path::append(fatbinary, "bin", "fatbinary");
  auto path = [&](llvm::StringRef name) {
    llvm::SmallString<256> p(outputDir);
    llvm::sys::path::append(p, name);
    return std::string(p);
  };
  std::string ptxPath = path("kernels.ptx"), reportPath =
                                                  path("kernels.ptxas.txt"),
              cubinPath = path("kernels.cubin"),
              fatbinPath = path("kernels.fatbin"),
              fatbinLog = path("kernels.fatbinary.txt");
  llvm::scope_exit removeTemporaries([&] {
    for (const std::string &file : {cubinPath, fatbinPath, fatbinLog})
      llvm::sys::fs::remove(file);
  });
  llvm::StringRef arch = codegen.chip;
  arch.consume_front("sm_");
  for (auto kernels :
       llvm::make_early_inc_range(module.getOps<gpu::GPUModuleOp>())) {
    Location loc = kernels.getLoc();
    if (!kernels.getTargetsAttr() || kernels.getTargetsAttr().size() != 1)
      return emitError(loc) << "expects one NVVM target on the kernels";
    auto target =
        cast<gpu::TargetAttrInterface>(kernels.getTargetsAttr()[0]);
    gpu::TargetOptions ptxOptions(toolkit, {}, "", "",
                                  gpu::CompilationTarget::Assembly);
    std::optional<SmallVector<char, 0>> ptx =
        target.serializeToObject(kernels, ptxOptions);
    if (!ptx)
      return emitError(loc) << "the NVPTX backend could not compile the "
                               "kernels";
    {
      std::error_code ec;
      llvm::ToolOutputFile file(ptxPath, ec, llvm::sys::fs::OF_None);
      if (ec)
        return emitError(loc) << "cannot write " << ptxPath << ": "
                              << ec.message();
      // The serialized assembly ends with a NUL for the driver's loader.
      llvm::StringRef text(ptx->data(), ptx->size());
      file.os() << text.take_until([](char c) { return c == '\0'; });
      file.keep();
    }
    if (failed(runTool(loc, ptxas,
                       {"-arch=" + codegen.chip, "-O3", "-v", ptxPath, "-o",
                        cubinPath},
                       reportPath)))
      return failure();
    auto report = llvm::MemoryBuffer::getFile(reportPath);
    if (!report)
      return emitError(loc) << "cannot read " << reportPath;
    if (failed(checkNoSpills(loc, (*report)->getBuffer())))
      return failure();
    if (failed(runTool(loc, fatbinary,
                       {"-64", "--create", fatbinPath,
                        "--image3=kind=elf,sm=" + arch.str() + ",file=" +
                            cubinPath,
                        "--image3=kind=ptx,sm=" + arch.str() + ",file=" +
                            ptxPath},
                       fatbinLog)))
      return failure();
    auto fatbin = llvm::MemoryBuffer::getFile(fatbinPath, /*IsText=*/false,
                                              /*RequiresNullTerminator=*/false);
    if (!fatbin)
      return emitError(loc) << "cannot read " << fatbinPath;
    SmallVector<char, 0> bytes((*fatbin)->getBufferStart(),
                               (*fatbin)->getBufferEnd());
    gpu::TargetOptions fatbinOptions(toolkit, {}, "", "",
                                     gpu::CompilationTarget::Fatbin);
    Attribute object = target.createObject(kernels, bytes, fatbinOptions);
    OpBuilder builder(kernels);
    gpu::BinaryOp::create(builder, loc, kernels.getName(), Attribute(),
                          builder.getArrayAttr({object}));
    kernels.erase();
  }
  return success();
}

/// What model.so links besides its objects: the CUDA runtime archive
/// (runtime/device/cuda), cuBLAS and the CUDA runtime library (CUB's
/// kernels). Not the driver: the archive opens libcuda.so.1 when first
/// needed, so that the artifact loads, and says why it cannot run, on a
/// machine without one. A sharded step (`sharded`: momac --fsdp) also
/// calls the FSDP archive, and carries the archive's NCCL collectives
/// (momarun calls them: nothing in the step names them) and NCCL.
std::vector<std::string> cudaLinkArguments(bool sharded) {
  std::string libDir = MOMAC_CUDA_LIBRARY_DIR;
  std::vector<std::string> arguments;
  if (sharded)
    arguments.push_back("-Wl,--undefined=momart_cuda_comm_init");
  llvm::append_range(arguments,
                     std::vector<std::string>{MOMAC_CUDA_RUNTIME_ARCHIVE,
                                              MOMAC_FSDP_RUNTIME_ARCHIVE,
                                              "-L" + libDir,
                                              "-Wl,-rpath," + libDir});
  if (sharded)
    arguments.push_back("-lnccl");
  llvm::append_range(arguments,
                     std::vector<std::string>{"-lcublasLt", "-lcublas",
                                              "-lcudart", "-ldl", "-lm"});
  return arguments;
}

} // namespace

TargetBackend momac::cudaTargetBackend(bool shardedStep,
                                       const CudaCodegenOptions &codegen) {
  TargetBackend cuda;
  cuda.name = "cuda";
  cuda.addCodegenPasses = [codegen](OpPassManager &pm) {
    addCudaCodegenPasses(pm, codegen);
  };
  // The kernels go through LLVM IR (NVVM, LLVM dialects) to PTX; the host
  // code embeds them (GPU dialect, offloading).
  cuda.registerDialects = [](DialectRegistry &registry) {
    NVVM::registerNVVMTargetInterfaceExternalModels(registry);
    registerAllToLLVMIRTranslations(registry);
  };
  cuda.finishModule = [codegen](ModuleOp module, llvm::StringRef outputDir) {
    return serializeKernels(module, outputDir, codegen);
  };
  cuda.finishPhase = "kernels: NVPTX, ptxas, fatbinary";
  // The host code is a sequence of launches and library calls, a few
  // thousand in a deep model's gradient, all in one function: LLVM's
  // optimizer and instruction selection are superlinear in it, and there
  // is nothing to vectorize or schedule. Unoptimized (FastISel), it
  // compiles in a fraction of the time and costs the GPU nothing.
  cuda.hostOptLevel = 0;
  // A GPU step does not wait for the token counts a MoD layer's router
  // decides: its modality groups are padded to the layer's token count.
  cuda.padsModGroups = true;
  cuda.linkArguments = cudaLinkArguments(shardedStep);
  return cuda;
}

#endif // MOMAC_CUDA_TOOLKIT_DIR
