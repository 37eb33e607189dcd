//===- RunRecord.cpp - What a training run was, and its loss curves -------===//

#include "runtime/train/RunRecord.h"

#include "lib/config/ModelStats.h"
#include "lib/support/AtomicFile.h"
#include "lib/support/Json.h"
#include "lib/support/SvgLineChart.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/LineIterator.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>
#include <optional>

using namespace momac;

namespace {

llvm::Error recordError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 message.str());
}

std::string pathIn(llvm::StringRef directory, llvm::StringRef name) {
  llvm::SmallString<256> path(directory);
  llvm::sys::path::append(path, name);
  return std::string(path);
}

/// Calls `take(line)` for each JSON object of RUN/metrics.jsonl, in order,
/// one line at a time: the file is mapped, not copied, and no line's object
/// outlives its call, so a log of any length takes little memory.
llvm::Error forEachMetricsLine(
    llvm::StringRef runDirectory,
    llvm::function_ref<void(const llvm::json::Object &)> take) {
  std::string path = pathIn(runDirectory, "metrics.jsonl");
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                            /*RequiresNullTerminator=*/true);
  if (!buffer)
    return recordError(path + ": " + buffer.getError().message());
  for (llvm::line_iterator line(**buffer, /*SkipBlanks=*/true); !line.is_at_eof();
       ++line) {
    llvm::Expected<llvm::json::Value> value = parseJson(*line);
    if (!value)
      return recordError(llvm::formatv("{0}:{1}: {2}", path,
                                       line.line_number(),
                                       llvm::toString(value.takeError())));
    const llvm::json::Object *object = value->getAsObject();
    if (!object)
      return recordError(llvm::formatv("{0}:{1}: not a JSON object", path,
                                       line.line_number()));
    take(*object);
  }
  return llvm::Error::success();
}

} // namespace

llvm::json::Value momac::jsonNumber(double value) {
  if (!std::isfinite(value))
    return nullptr;
  return value;
}

llvm::Expected<MetricsLog> MetricsLog::open(llvm::StringRef path,
                                            bool leader) {
  MetricsLog log;
  log.path = path.str();
  if (!leader)
    return std::move(log);
  std::error_code ec;
  log.out = std::make_unique<llvm::raw_fd_ostream>(path, ec,
                                                   llvm::sys::fs::OF_Append);
  if (ec)
    return recordError(path + ": " + ec.message());
  return std::move(log);
}

llvm::Error MetricsLog::write(llvm::json::Object line) {
  if (!out)
    return llvm::Error::success();
  *out << llvm::formatv("{0}", llvm::json::Value(std::move(line))) << "\n";
  out->flush();
  if (out->has_error()) {
    std::string message = out->error().message();
    out->clear_error();
    return recordError(path + ": " + message);
  }
  return llvm::Error::success();
}

llvm::Error momac::truncateMetrics(llvm::StringRef path, int64_t lastStep) {
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/true);
  if (!buffer)
    return llvm::Error::success();
  std::string kept;
  llvm::SmallVector<llvm::StringRef> lines;
  (*buffer)->getBuffer().split(lines, '\n', -1, false);
  for (llvm::StringRef line : lines) {
    llvm::Expected<llvm::json::Value> value = parseJson(line);
    if (!value) {
      llvm::consumeError(value.takeError());
      continue;
    }
    const llvm::json::Object *object = value->getAsObject();
    std::optional<int64_t> step =
        object ? object->getInteger("step") : std::nullopt;
    if (step && *step <= lastStep)
      kept += line.str() + "\n";
  }
  std::error_code ec;
  llvm::raw_fd_ostream out(path, ec, llvm::sys::fs::OF_Text);
  if (ec)
    return recordError(path + ": " + ec.message());
  out << kept;
  return llvm::Error::success();
}

llvm::Error momac::writeRunRecord(llvm::StringRef runDirectory,
                                  const RunRecord &record) {
  llvm::json::Object object{
      {"model", record.model},
      {"tokens_per_step", record.tokensPerStep},
      {"train_flops_per_token", record.trainFlopsPerToken},
      {"flops_before", record.flopsBefore}};
  if (!record.continues.empty())
    object["continues"] = record.continues;
  std::string path = pathIn(runDirectory, "run.json");
  llvm::Expected<TempFile> temp = createTempBeside(path);
  if (!temp)
    return temp.takeError();
  llvm::raw_fd_ostream out(temp->fd, /*shouldClose=*/false);
  out << llvm::formatv("{0:2}", llvm::json::Value(std::move(object))) << "\n";
  out.flush();
  if (out.has_error()) {
    std::string message = out.error().message();
    out.clear_error();
    discardTemp(*temp);
    return recordError(path + ": " + message);
  }
  return commitTemp(*temp);
}

llvm::Expected<RunRecord> momac::readRunRecord(llvm::StringRef runDirectory) {
  std::string path = pathIn(runDirectory, "run.json");
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/true);
  if (!buffer)
    return recordError(path + ": " + buffer.getError().message() +
                       " (written by momarun train)");
  llvm::Expected<llvm::json::Value> value =
      parseJson((*buffer)->getBuffer());
  if (!value)
    return recordError(path + ": " + llvm::toString(value.takeError()));
  const llvm::json::Object *object = value->getAsObject();
  RunRecord record;
  auto tokens = object ? object->getInteger("tokens_per_step") : std::nullopt;
  auto flops =
      object ? object->getNumber("train_flops_per_token") : std::nullopt;
  if (!tokens || !flops)
    return recordError(path + ": expected tokens_per_step and "
                              "train_flops_per_token");
  record.tokensPerStep = *tokens;
  record.trainFlopsPerToken = *flops;
  if (auto model = object->getString("model"))
    record.model = model->str();
  record.flopsBefore = object->getNumber("flops_before").value_or(0);
  if (auto continues = object->getString("continues"))
    record.continues = continues->str();
  return record;
}

namespace {
llvm::Expected<RunCurves> readRunCurvesAt(llvm::StringRef runDirectory,
                                          int depth);
} // namespace

llvm::Expected<RunCurves> momac::readRunCurves(llvm::StringRef runDirectory) {
  return readRunCurvesAt(runDirectory, 0);
}

namespace {
llvm::Expected<RunCurves> readRunCurvesAt(llvm::StringRef runDirectory,
                                          int depth) {
  // Runs continue runs (upcycling stages); a chain this long is a cycle.
  if (depth > 64)
    return recordError(pathIn(runDirectory, "run.json") +
                       ": its \"continues\" links form a cycle");
  llvm::Expected<RunRecord> record = readRunRecord(runDirectory);
  if (!record)
    return record.takeError();
  RunCurves curves;
  curves.label = llvm::sys::path::filename(
                     llvm::sys::path::remove_leading_dotslash(runDirectory))
                     .str();
  if (curves.label.empty() || curves.label == ".")
    curves.label = runDirectory.str();
  if (!record->continues.empty()) {
    llvm::Expected<RunCurves> before =
        readRunCurvesAt(record->continues, depth + 1);
    if (!before)
      return before.takeError();
    // Up to the checkpoint this run started from; steps logged after it
    // were not continued.
    for (auto &[name, points] : before->series)
      for (auto [x, y] : points)
        if (x <= record->flopsBefore * (1 + 1e-12))
          curves.series[name].push_back({x, y});
  }
  const double perStep =
      double(record->tokensPerStep) * record->trainFlopsPerToken;
  curves.totalFlops = record->flopsBefore;
  // A step without a modality's targets logs its loss as null (and its
  // targets.<modality> as 0): such a step is not a point of that curve, so
  // the curve and its final mean are over the steps that had its tokens.
  // Non-finite values (1e999 parses as infinity) are not points either.
  if (llvm::Error error = forEachMetricsLine(
          runDirectory, [&](const llvm::json::Object &line) {
            auto step = line.getInteger("step");
            if (!step || *step < 1)
              return;
            double flops = record->flopsBefore + double(*step) * perStep;
            curves.totalFlops = flops;
            for (const auto &[key, value] : line) {
              llvm::StringRef name = key;
              if (name != "loss" && !name.starts_with("loss."))
                continue;
              auto number = value.getAsNumber();
              if (number && std::isfinite(*number))
                curves.series[name.str()].push_back({flops, *number});
            }
          }))
    return std::move(error);
  return curves;
}
} // namespace

llvm::Error momac::writeNewRunRecord(llvm::StringRef runDirectory,
                                     const ModelConfig &config,
                                     int64_t tokensPerStep,
                                     llvm::StringRef continuedCheckpoint,
                                     int64_t continuedSteps) {
  RunRecord record;
  record.model = config.name;
  record.tokensPerStep = tokensPerStep;
  ModelStats stats = computeModelStats(config);
  for (const TokenCost &cost : stats.perModality)
    record.trainFlopsPerToken +=
        cost.trainFlops / double(stats.perModality.size());
  if (!continuedCheckpoint.empty()) {
    llvm::SmallString<256> stageOne(
        llvm::sys::path::parent_path(continuedCheckpoint));
    if (stageOne.empty())
      stageOne = ".";
    llvm::sys::fs::make_absolute(stageOne);
    // The compute up to the checkpoint's step (the stage-1 run may have
    // logged steps after it).
    if (llvm::Expected<RunRecord> stage = readRunRecord(stageOne)) {
      record.flopsBefore =
          stage->flopsBefore + double(continuedSteps) *
                                   double(stage->tokensPerStep) *
                                   stage->trainFlopsPerToken;
      record.continues = std::string(stageOne);
    } else {
      llvm::consumeError(stage.takeError()); // not a momarun run directory
    }
  }
  return writeRunRecord(runDirectory, record);
}

void momac::reportRankMemory(llvm::raw_ostream &os,
                             llvm::StringRef runDirectory, int rank, int ranks,
                             llvm::StringRef backend,
                             const RankMemory &memory) {
  auto mib = [](int64_t bytes) {
    return llvm::formatv("{0:F2} MiB", double(bytes) / (1 << 20)).str();
  };
  os << llvm::formatv("momarun: rank {0} of {1}{2} holds parameters {3}, "
                      "gradients {4}, optimizer state {5}",
                      rank, ranks,
                      backend.empty() ? std::string()
                                      : " (" + backend.str() + ")",
                      mib(memory.parameterBytes), mib(memory.gradientBytes),
                      mib(memory.optimizerBytes));
  if (memory.gatheredBytes)
    os << llvm::formatv("; gathered at once at most {0} (two units; the "
                        "largest is {1})",
                        mib(memory.gatheredBytes), memory.largestUnit);
  os << "\n";
  os.flush();

  auto path = [&](int r) {
    llvm::SmallString<256> file(runDirectory);
    llvm::sys::path::append(file, "memory.rank-" + std::to_string(r) + ".json");
    return std::string(file);
  };
  if (rank == 0)
    for (int r = ranks;; ++r)
      if (llvm::sys::fs::remove(path(r), /*IgnoreNonExisting=*/false))
        break;
  llvm::json::Object json{{"rank", rank},
                          {"ranks", ranks},
                          {"parameter_bytes", memory.parameterBytes},
                          {"gradient_bytes", memory.gradientBytes},
                          {"optimizer_bytes", memory.optimizerBytes}};
  if (memory.gatheredBytes)
    json["gathered_bytes"] = memory.gatheredBytes;
  std::error_code ec;
  llvm::raw_fd_ostream out(path(rank), ec);
  if (!ec)
    out << llvm::formatv("{0:2}", llvm::json::Value(std::move(json))) << "\n";
}

std::vector<std::pair<double, double>>
momac::trailingMean(const std::vector<std::pair<double, double>> &points,
                    size_t window) {
  std::vector<std::pair<double, double>> smoothed;
  double sum = 0;
  for (size_t i = 0; i < points.size(); ++i) {
    sum += points[i].second;
    if (i >= window)
      sum -= points[i - window].second;
    smoothed.push_back(
        {points[i].first, sum / double(std::min(i + 1, window))});
  }
  return smoothed;
}

RunPlot momac::plotRunCurves(const std::vector<RunCurves> &runs,
                             size_t smooth) {
  RunPlot plot;
  plot.seriesNames = {"loss"};
  for (const RunCurves &run : runs)
    for (const auto &[name, points] : run.series)
      if (!llvm::is_contained(plot.seriesNames, name))
        plot.seriesNames.push_back(name);
  std::vector<ChartPanel> panels;
  for (const std::string &name : plot.seriesNames) {
    ChartPanel panel;
    panel.title = name == "loss" ? "all tokens (section-7 loss)"
                                 : name.substr(5) + " tokens";
    for (const RunCurves &run : runs) {
      auto found = run.series.find(name);
      if (found != run.series.end())
        panel.series.push_back({run.label, trailingMean(found->second, smooth)});
    }
    panels.push_back(std::move(panel));
  }
  plot.svg = renderLineCharts(panels, "training FLOPs", "loss");
  for (const RunCurves &run : runs) {
    std::vector<std::optional<double>> &finals = plot.finals.emplace_back();
    for (const std::string &name : plot.seriesNames) {
      auto found = run.series.find(name);
      if (found == run.series.end() || found->second.empty())
        finals.push_back(std::nullopt);
      else
        finals.push_back(trailingMean(found->second, smooth).back().second);
    }
  }
  return plot;
}
