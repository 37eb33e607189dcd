//===- Report.h - momac --report --------------------------------*- C++ -*-===//

#ifndef MOMAC_TOOLS_MOMAC_REPORT_H
#define MOMAC_TOOLS_MOMAC_REPORT_H

#include "lib/config/ModelConfig.h"
#include "lib/config/ModelStats.h"

#include "llvm/Support/raw_ostream.h"

namespace momac {

/// A table for people: sizes, FLOPs per token and training-step memory.
void printReport(llvm::raw_ostream &os, const ModelConfig &config,
                 const ModelStats &stats);

/// The same numbers as one JSON object, exact integers throughout.
void printReportJson(llvm::raw_ostream &os, const ModelConfig &config,
                     const ModelStats &stats);

} // namespace momac

#endif // MOMAC_TOOLS_MOMAC_REPORT_H
