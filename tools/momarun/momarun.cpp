//===- momarun.cpp - Runs compiled MoMa artifacts -------------------------===//
//
//   momarun init | upcycle | corpus        models and data (ModelCommands.cpp)
//   momarun eval | grad | generate         evaluation (EvalCommands.cpp)
//   momarun train | train-aux | ckpt       training (TrainCommands.cpp)
//   momarun plot                           loss curves (PlotCommand.cpp)
//
// ARTIFACT is a directory written by `momac MODEL.json -o ARTIFACT`. momarun
// dlopens its model.so and calls the compiled entry points; it compiles
// nothing and holds no model math of its own. This file parses the command
// line and dispatches; the work is the runtime's (runtime/).
//
//===----------------------------------------------------------------------===//

#include "tools/momarun/Commands.h"

#include "lib/support/AtomicFile.h"
#include "lib/support/Escape.h"
#include "runtime/device/Device.h"

#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

#include <malloc.h>

using namespace momac;
using namespace momac::momarun;
namespace cl = llvm::cl;

llvm::cl::OptionCategory &momac::momarun::momarunCategory() {
  static cl::OptionCategory category("momarun options");
  return category;
}

llvm::Error momac::momarun::usageError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message.str());
}

int momac::momarun::fail(llvm::Error error) {
  // Messages quote their input; its control bytes must not reach the
  // terminal.
  llvm::WithColor::error(llvm::errs(), "momarun")
      << escapeControlCharacters(llvm::toString(std::move(error))) << "\n";
  return 1;
}

std::vector<std::string>
momac::momarun::artifactFiles(llvm::StringRef directory) {
  std::vector<std::string> files;
  for (const char *name : {"manifest.json", "model.json", "model.so"})
    files.push_back((directory + "/" + name).str());
  return files;
}

llvm::Error
momac::momarun::refuseInputsAsOutputs(llvm::ArrayRef<std::string> outputs,
                                      llvm::ArrayRef<std::string> inputs) {
  for (const std::string &output : outputs)
    if (llvm::Error error = refuseInputAsOutput(output, inputs))
      return error;
  return llvm::Error::success();
}

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  // Every step allocates and frees the same large buffers: keep them on the
  // heap instead of mapping and unmapping them (and returning the memory to
  // the kernel) on every step. -1 disables trimming (mallopt(3)); a finite
  // threshold, even INT_MAX, let a 90M model's step give gigabytes back and
  // fault them in again, zeroed, on the next step (13% of its time).
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, -1);
  // Before MPI or an artifact starts a thread: the OpenBLAS kernels for this
  // CPU (runtime/device/cpu/OpenBlasCore.h).
  momac::prepareHostBeforeThreads();
  // --help lists momarun's own options, not LLVM's.
  cl::HideUnrelatedOptions(momarunCategory());
  cl::ParseCommandLineOptions(
      argc, argv,
      "momarun: runs MoMa models compiled by momac\n\n"
      "  momarun init ARTIFACT -o W.safetensors [--seed N]\n"
      "  momarun eval ARTIFACT --weights W.safetensors --data PREFIX\n"
      "  momarun grad ARTIFACT --weights W.safetensors --tokens T.bin --out "
      "O.safetensors\n"
      "  momarun train ARTIFACT --data PREFIX --steps N --out RUN/ [--init W] "
      "[--resume | --data-position-from CKPT]\n"
      "  momarun train-aux ARTIFACT --weights W --data PREFIX --steps N "
      "--out RUN/\n"
      "  momarun generate ARTIFACT --weights W --prompt FILE [--max-new N] "
      "[--temperature T] [--top-p P] [--seed S]\n"
      "  momarun plot RUN... -o curves.svg [--smooth N]\n"
      "  momarun upcycle --from CKPT --to ARTIFACT -o W.safetensors "
      "[--seed N]\n"
      "  momarun corpus MODEL --out PREFIX (--synthetic N | --input FILE)\n"
      "  momarun ckpt consolidate RUN/ -o W.safetensors\n"
      "  mpirun -np R momarun train ARTIFACT ...   (FSDP on R ranks, over "
      "MPI between CPUs and NCCL between GPUs; the artifact compiled with "
      "momac --fsdp)\n");
  const std::pair<cl::SubCommand *, int (*)()> commands[] = {
      {&initCommand, runInit},         {&evalCommand, runEval},
      {&gradCommand, runGrad},         {&trainCommand, runTrain},
      {&upcycleCommand, runUpcycle},   {&trainAuxCommand, runTrainAux},
      {&plotCommand, runPlot},         {&generateCommand, runGenerate},
      {&corpusCommand, runCorpus},     {&ckptCommand, runCkpt}};
  for (auto [command, run] : commands)
    if (*command)
      return run();
  cl::PrintHelpMessage();
  return 1;
}
