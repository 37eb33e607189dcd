//===- RunRecord.h - What a training run was, and its loss curves -*- C++ -*-===//
//
// momarun train writes RUN/run.json next to RUN/metrics.jsonl (MetricsLog):
// the model, the tokens of a step and the training FLOPs of a token (momac
// --report), and, for stage 2 of an upcycling (--data-position-from), the
// run it continues. momarun plot reads them back to put runs of different
// models on one axis of training compute, as the MoMa paper compares them.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_TRAIN_RUNRECORD_H
#define MOMAC_RUNTIME_TRAIN_RUNRECORD_H

#include "lib/config/ModelConfig.h"

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace momac {

struct RunRecord {
  std::string model;
  int64_t tokensPerStep = 0;
  /// Training FLOPs of a token, the mean over the modalities' paths.
  double trainFlopsPerToken = 0;
  /// Training FLOPs spent before this run's step 1 (by the run it
  /// continues), and that run's directory; 0 and empty for a fresh run.
  double flopsBefore = 0;
  std::string continues;
};

llvm::Error writeRunRecord(llvm::StringRef runDirectory,
                           const RunRecord &record);
llvm::Expected<RunRecord> readRunRecord(llvm::StringRef runDirectory);

/// Writes RUN/run.json for a fresh run of `config`: its training FLOPs per
/// token (momac --report, the mean over the modalities' paths) and tokens
/// per step. For stage 2 of an upcycling, `continuedCheckpoint` is stage
/// 1's checkpoint, taken after `continuedSteps` steps: the record then
/// names stage 1's run and counts its compute up to that step first.
llvm::Error writeNewRunRecord(llvm::StringRef runDirectory,
                              const ModelConfig &config, int64_t tokensPerStep,
                              llvm::StringRef continuedCheckpoint,
                              int64_t continuedSteps);

/// A metric as JSON: the number, or null when it is NaN or infinite, which
/// JSON cannot write (llvm::json would print a bare `nan`).
llvm::json::Value jsonNumber(double value);

/// RUN/metrics.jsonl: one JSON object per line, flushed as it is written,
/// so a run killed at any moment keeps every finished step's line. Only
/// the leader (rank 0 of several) writes; the others' log does nothing.
class MetricsLog {
public:
  /// Opens `path` for appending on the leader (a fresh run removes it
  /// first; a resumed one truncates it to its checkpoint: truncateMetrics).
  static llvm::Expected<MetricsLog> open(llvm::StringRef path, bool leader);
  llvm::Error write(llvm::json::Object line);

private:
  std::string path;
  std::unique_ptr<llvm::raw_fd_ostream> out;
};

/// Keeps the metrics of steps 1..lastStep in metrics.jsonl at `path` (a
/// resumed run rewrites the rest).
llvm::Error truncateMetrics(llvm::StringRef path, int64_t lastStep);

/// What one rank of a run holds in memory.
struct RankMemory {
  int64_t parameterBytes = 0, gradientBytes = 0, optimizerBytes = 0;
  /// With FSDP: the most it holds gathered at once, and the largest unit.
  int64_t gatheredBytes = 0;
  std::string largestUnit;
};

/// Prints on `os` what rank `rank` of `ranks` holds (`backend`, when not
/// empty, names its communicator), writes it to RUN/memory.rank-<rank>.json
/// and, on rank 0, removes the reports an earlier run on more ranks left.
void reportRankMemory(llvm::raw_ostream &os, llvm::StringRef runDirectory,
                      int rank, int ranks, llvm::StringRef backend,
                      const RankMemory &memory);

/// A run's metrics against training FLOPs: each series ("loss",
/// "loss.<modality>") as (FLOPs after the step, value) points, steps with a
/// non-finite value left out. A run that continues another starts with that
/// run's points.
struct RunCurves {
  std::string label;
  std::map<std::string, std::vector<std::pair<double, double>>> series;
  double totalFlops = 0;
};

llvm::Expected<RunCurves> readRunCurves(llvm::StringRef runDirectory);

/// The trailing mean over `window` points of each point.
std::vector<std::pair<double, double>>
trailingMean(const std::vector<std::pair<double, double>> &points,
             size_t window);

/// The curves of several runs, drawn: one panel per series ("loss" over all
/// tokens, then each modality's), each curve the trailing mean over
/// `smooth` steps, and each run's final value of each series (the last
/// trailing mean; unset where the run has none).
struct RunPlot {
  std::string svg;
  std::vector<std::string> seriesNames;
  std::vector<std::vector<std::optional<double>>> finals;
};
RunPlot plotRunCurves(const std::vector<RunCurves> &runs, size_t smooth);

} // namespace momac

#endif // MOMAC_RUNTIME_TRAIN_RUNRECORD_H
