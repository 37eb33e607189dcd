//===- PlotCommand.cpp - momarun plot ------------------------------------===//

#include "tools/momarun/Commands.h"

#include "lib/support/AtomicFile.h"
#include "runtime/train/RunRecord.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

using namespace momac;
using namespace momac::momarun;
namespace cl = llvm::cl;

cl::SubCommand momac::momarun::plotCommand(
    "plot", "Draw the loss curves of training runs against training FLOPs, "
            "per modality, as SVG, and print their final losses");

namespace {

cl::list<std::string> plotRuns(cl::Positional, cl::OneOrMore,
                               cl::desc("<run directory>..."),
                               cl::sub(plotCommand), cl::cat(momarunCategory()));
cl::opt<std::string> plotOutput("o", cl::Required,
                                cl::desc("The SVG file to write"),
                                cl::value_desc("file"), cl::sub(plotCommand),
                                cl::cat(momarunCategory()));
cl::opt<int64_t> plotSmooth(
    "smooth", cl::init(10),
    cl::desc("Average each curve over its last N steps, at least 1 (1: the "
             "raw per-step losses; default 10); the final losses are means "
             "over the last N steps too"),
    cl::value_desc("N"), cl::sub(plotCommand), cl::cat(momarunCategory()));

} // namespace

int momac::momarun::runPlot() {
  if (plotSmooth < 1)
    return fail(usageError("--smooth must be at least 1"));
  std::vector<std::string> inputs;
  for (const std::string &dir : plotRuns)
    inputs.insert(inputs.end(), {dir + "/metrics.jsonl", dir + "/run.json"});
  if (llvm::Error error = refuseInputsAsOutputs({plotOutput}, inputs))
    return fail(std::move(error));
  std::vector<RunCurves> runs;
  for (const std::string &dir : plotRuns) {
    llvm::Expected<RunCurves> curves = readRunCurves(dir);
    if (!curves)
      return fail(curves.takeError());
    runs.push_back(std::move(*curves));
  }
  RunPlot plot = plotRunCurves(runs, size_t(plotSmooth));
  if (llvm::Error error = writeFileAtomically(plotOutput, plot.svg))
    return fail(std::move(error));
  // The table: each run's compute and its final losses.
  llvm::outs() << llvm::formatv("{0,-24} {1,12}", "run", "FLOPs");
  for (const std::string &name : plot.seriesNames)
    llvm::outs() << llvm::formatv(" {0,12}", name);
  llvm::outs() << "\n";
  for (auto [run, finals] : llvm::zip(runs, plot.finals)) {
    llvm::outs() << llvm::formatv("{0,-24} {1,12:e2}", run.label,
                                  run.totalFlops);
    for (const std::optional<double> &value : finals)
      llvm::outs() << (value ? llvm::formatv(" {0,12:F4}", *value).str()
                             : llvm::formatv(" {0,12}", "-").str());
    llvm::outs() << "\n";
  }
  llvm::outs() << llvm::formatv("final losses: means over the last {0} steps; "
                                "wrote {1}\n",
                                int64_t(plotSmooth), plotOutput);
  return 0;
}
