//===- Report.h - momac --report --------------------------------*- C++ -*-===//

#ifndef MOMAC_TOOLS_MOMAC_REPORT_H
#define MOMAC_TOOLS_MOMAC_REPORT_H

#include "compiler/Analysis/StepStatistics.h"
#include "lib/config/ModelConfig.h"
#include "lib/config/ModelStats.h"

#include "llvm/Support/raw_ostream.h"

namespace momac {

/// A table for people: sizes, FLOPs per token and training-step memory.
void printReport(llvm::raw_ostream &os, const ModelConfig &config,
                 const ModelStats &stats, int64_t ranks = 1);

/// The same numbers as one JSON object, exact integers throughout.
void printReportJson(llvm::raw_ostream &os, const ModelConfig &config,
                     const ModelStats &stats, int64_t ranks = 1);

/// momac --stats: kernels, library calls, copies and bytes per entry point,
/// then per model part of the gradient (the step's largest function).
void printStatistics(
    llvm::raw_ostream &os, const ModelConfig &config,
    const std::map<std::string, FunctionStatistics> &statistics,
    int64_t tokens);

} // namespace momac

#endif // MOMAC_TOOLS_MOMAC_REPORT_H
