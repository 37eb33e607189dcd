//===- Commands.h - momarun's subcommands -----------------------*- C++ -*-===//
//
// Each subcommand is an llvm::cl::SubCommand with its options and a run
// function, in the file of its group: models (init, upcycle, corpus),
// evaluation (eval, grad, generate), training (train, train-aux, ckpt) and
// plot. The work itself is the runtime's (runtime/); momarun.cpp parses the
// command line and dispatches.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_TOOLS_MOMARUN_COMMANDS_H
#define MOMAC_TOOLS_MOMARUN_COMMANDS_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/Error.h"

#include <string>
#include <vector>

namespace momac::momarun {

/// The category of every momarun option (--help lists only these).
llvm::cl::OptionCategory &momarunCategory();

/// An error of the command line or the user's input, in one line.
llvm::Error usageError(const llvm::Twine &message);
/// Prints `error` as momarun's error line; returns the exit status 1.
int fail(llvm::Error error);

/// The files of an artifact directory: inputs of every command that loads
/// one.
std::vector<std::string> artifactFiles(llvm::StringRef directory);
/// Refuses a command whose `outputs` include one of its `inputs` (the same
/// file by device and inode), before it reads or writes anything.
llvm::Error refuseInputsAsOutputs(llvm::ArrayRef<std::string> outputs,
                                  llvm::ArrayRef<std::string> inputs);

extern llvm::cl::SubCommand initCommand, upcycleCommand, corpusCommand;
int runInit();
int runUpcycle();
int runCorpus();

extern llvm::cl::SubCommand evalCommand, gradCommand, generateCommand;
int runEval();
int runGrad();
int runGenerate();

extern llvm::cl::SubCommand trainCommand, trainAuxCommand, ckptCommand;
int runTrain();
int runTrainAux();
int runCkpt();

extern llvm::cl::SubCommand plotCommand;
int runPlot();

} // namespace momac::momarun

#endif // MOMAC_TOOLS_MOMARUN_COMMANDS_H
