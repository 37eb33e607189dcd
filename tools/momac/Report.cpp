//===- Report.cpp - momac --report ----------------------------------------===//

#include "tools/momac/Report.h"

#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"

#include <cmath>
#include <optional>

using namespace momac;

namespace {

/// 210364416 -> "210.36M"; 1.2e12 -> "1.20T".
std::string humanCount(double value) {
  static constexpr std::pair<double, const char *> kUnits[] = {
      {1e12, "T"}, {1e9, "G"}, {1e6, "M"}, {1e3, "K"}};
  for (auto [scale, suffix] : kUnits)
    if (std::fabs(value) >= scale)
      return llvm::formatv("{0:F2}{1}", value / scale, suffix).str();
  return llvm::formatv("{0}", int64_t(std::llround(value))).str();
}

std::string humanBytes(int64_t bytes) {
  static constexpr std::pair<double, const char *> kUnits[] = {
      {1099511627776.0, "TiB"},
      {1073741824.0, "GiB"},
      {1048576.0, "MiB"},
      {1024.0, "KiB"}};
  for (auto [scale, suffix] : kUnits)
    if (double(bytes) >= scale)
      return llvm::formatv("{0:F2} {1}", double(bytes) / scale, suffix).str();
  return llvm::formatv("{0} B", bytes).str();
}

std::string grouped(int64_t value) {
  std::string digits = std::to_string(value), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0)
      out += ',';
    out += digits[i];
  }
  return out;
}

int64_t rounded(double value) { return int64_t(std::llround(value)); }

std::vector<const TokenCost *> costRows(const ModelStats &stats) {
  std::vector<const TokenCost *> rows;
  for (const TokenCost &cost : stats.perModality)
    rows.push_back(&cost);
  rows.push_back(&stats.dense);
  return rows;
}

} // namespace

void momac::printReport(llvm::raw_ostream &os, const ModelConfig &config,
                        const ModelStats &stats, int64_t ranks) {
  os << "model " << config.name << "\n";
  os << llvm::formatv("  {0} layers ({1} MoE, {2} MoD), d_model {3}, {4} "
                      "heads of {5}, ffn_hidden {6}, seq_len {7}, vocab {8}, "
                      "norm {9}\n",
                      config.nLayers, stats.moeLayers, stats.modLayers,
                      config.dModel, config.nHeads, config.headDim(),
                      config.ffnHidden, config.seqLen, config.vocabSize,
                      config.norm == NormOrder::Swin ? "swin" : "pre");
  if (config.moe) {
    os << "  expert groups:";
    for (const ExpertGroup &group : config.moe->groups) {
      os << (&group == &config.moe->groups.front() ? " " : "; ") << group.name
         << " = " << group.experts << " x [";
      llvm::interleaveComma(group.modalities, os);
      os << "]";
    }
    os << llvm::formatv(", capacity_factor {0}, MoE every {1} layer(s)\n",
                        config.moe->capacityFactor, config.moe->every);
  }
  if (config.mod)
    os << llvm::formatv("  mixture-of-depths: layers l % {0} == {1}, "
                        "capacity {2}\n",
                        config.mod->every, config.mod->offset,
                        config.mod->capacity);

  os << "\nparameters\n";
  auto countRow = [&](llvm::StringRef label, int64_t value) {
    os << llvm::formatv("  {0,-24}{1,10}  ({2})\n", label, humanCount(value),
                        grouped(value));
  };
  countRow("total", stats.totalParams);
  countRow("embeddings + output", stats.embeddingParams);
  countRow("experts", stats.expertParams);
  countRow("aux routers", stats.auxRouterParams);
  countRow("trained by the step", stats.trainableParams);

  os << "\nper token (expected)      active params  forward FLOPs  "
        "train FLOPs  vs dense\n";
  for (const TokenCost *cost : costRows(stats))
    os << llvm::formatv(
        "  {0,-24}{1,13}  {2,13}  {3,11}  {4,7:F3}x\n",
        cost == &stats.dense ? "dense backbone" : cost->label.c_str(),
        humanCount(cost->activeParams), humanCount(cost->forwardFlops),
        humanCount(cost->trainFlops),
        cost->forwardFlops / stats.dense.forwardFlops);
  os << llvm::formatv("  FLOPs-matched dense model: {0:F2} layers of this "
                      "width\n",
                      stats.denseEquivalentLayers);

  os << "\ntraining-step state (fp32 master weights, AdamW)\n";
  auto byteRow = [&](llvm::StringRef label, int64_t bytes) {
    os << llvm::formatv("  {0,-24}{1,12}\n", label, humanBytes(bytes));
  };
  byteRow("parameters", stats.parameterBytes);
  byteRow("gradients", stats.gradientBytes);
  byteRow("optimizer (m, v)", stats.optimizerBytes);
  byteRow("total", stats.totalStateBytes());
  if (ranks > 1) {
    ShardedStateBytes sharded = computeShardedStateBytes(config, ranks);
    os << llvm::formatv("\nper rank with FSDP on {0} ranks (momac --fsdp, "
                        "mpirun -np {0} momarun train)\n",
                        ranks);
    byteRow("parameters (shard)", sharded.parameterBytes);
    byteRow("gradients (shard)", sharded.gradientBytes);
    byteRow("optimizer (shard)", sharded.optimizerBytes);
    byteRow("gathered units (2)", sharded.gatheredBytes);
    os << llvm::formatv("  {0,-24}{1,12}   (largest unit: {2})\n", "total",
                        humanBytes(sharded.totalBytes()), sharded.largestUnit);
  }
  os << "\nFLOPs count matrix multiplies (2 per multiply-add) incl. causal "
        "attention;\na training step is 3x the forward pass.\n";
}

void momac::printReportJson(llvm::raw_ostream &os, const ModelConfig &config,
                            const ModelStats &stats, int64_t ranks) {
  llvm::json::OStream json(os, /*IndentSize=*/2);
  json.object([&] {
    json.attribute("model", config.name);
    json.attribute("layers", config.nLayers);
    json.attribute("moe_layers", stats.moeLayers);
    json.attribute("mod_layers", stats.modLayers);
    json.attributeObject("parameters", [&] {
      json.attribute("total", stats.totalParams);
      json.attribute("embeddings", stats.embeddingParams);
      json.attribute("experts", stats.expertParams);
      json.attribute("aux_routers", stats.auxRouterParams);
      json.attribute("trainable", stats.trainableParams);
    });
    auto perRow = [&](llvm::StringRef key, auto field) {
      json.attributeObject(key, [&] {
        for (const TokenCost *cost : costRows(stats))
          json.attribute(cost->label, rounded(field(*cost)));
      });
    };
    perRow("active_parameters",
           [](const TokenCost &c) { return c.activeParams; });
    perRow("forward_flops_per_token",
           [](const TokenCost &c) { return c.forwardFlops; });
    perRow("train_flops_per_token",
           [](const TokenCost &c) { return c.trainFlops; });
    // Three decimals are all the precision this estimate has.
    json.attributeBegin("dense_equivalent_layers");
    json.rawValue(llvm::formatv("{0:F3}", stats.denseEquivalentLayers).str());
    json.attributeEnd();
    json.attributeObject("memory_bytes", [&] {
      json.attribute("parameters", stats.parameterBytes);
      json.attribute("gradients", stats.gradientBytes);
      json.attribute("optimizer", stats.optimizerBytes);
      json.attribute("total", stats.totalStateBytes());
    });
    if (ranks > 1) {
      ShardedStateBytes sharded = computeShardedStateBytes(config, ranks);
      json.attributeObject("memory_bytes_per_rank", [&] {
        json.attribute("ranks", ranks);
        json.attribute("parameters", sharded.parameterBytes);
        json.attribute("gradients", sharded.gradientBytes);
        json.attribute("optimizer", sharded.optimizerBytes);
        json.attribute("gathered", sharded.gatheredBytes);
        json.attribute("largest_unit", sharded.largestUnit);
        json.attribute("total", sharded.totalBytes());
      });
    }
  });
  os << "\n";
}

void momac::printStatistics(
    llvm::raw_ostream &os, const ModelConfig &config,
    const std::map<std::string, FunctionStatistics> &statistics,
    int64_t tokens) {
  os << llvm::formatv("{0}: one training step after fusion and tiling "
                      "({1} tokens per micro-batch)\n",
                      config.name, tokens);
  auto row = [&](llvm::StringRef name, const KernelCounts &counts,
                 std::optional<double> peak = std::nullopt) {
    os << llvm::formatv("  {0,-16} {1,8} {2,6} {3,6} {4,7} {5,12:F1}", name,
                        counts.kernels, counts.gemms, counts.topK,
                        counts.copies, counts.bytes / 1e6);
    if (peak)
      os << llvm::formatv(" {0,12:F1}", *peak / 1e6);
    os << "\n";
  };
  auto header = [&](llvm::StringRef title, bool memory) {
    os << llvm::formatv("  {0,-16} {1,8} {2,6} {3,6} {4,7} {5,12}", title,
                        "kernels", "GEMMs", "top-k", "copies", "MB moved");
    if (memory)
      os << llvm::formatv(" {0,12}", "MB peak temp");
    os << "\n";
  };
  header("entry point", true);
  KernelCounts step;
  double stepPeak = 0;
  for (const auto &[name, stats] : statistics) {
    row(name, stats.total, stats.peakTemporaryBytes);
    // A training step is @grad then @optimizer_step; the other entry
    // points (evaluation, decoding, the aux routers' training) run alone.
    if (name == "grad" || name == "optimizer_step") {
      step += stats.total;
      stepPeak = std::max(stepPeak, stats.peakTemporaryBytes);
    }
  }
  row("step", step, stepPeak);
  // What a training process holds: the state of --report (weights,
  // gradients, AdamW moments) plus the step's largest temporaries.
  double state = double(computeModelStats(config).totalStateBytes());
  os << llvm::formatv("  memory of a training step (predicted): {0:F1} MB "
                      "state + {1:F1} MB temporaries = {2:F1} MB\n",
                      state / 1e6, stepPeak / 1e6, (state + stepPeak) / 1e6);
  // Per part of @grad (forward recomputation and backward of each layer).
  auto grad = statistics.find("grad");
  if (grad == statistics.end())
    return;
  os << "\n";
  header("grad by part", false);
  // layers.10 after layers.9: order by layer number, then "model".
  std::vector<std::pair<int64_t, std::string>> parts;
  for (const auto &[part, counts] : grad->second.byPart) {
    int64_t order = INT64_MAX;
    llvm::StringRef name(part);
    if (name.consume_front("layers."))
      name.getAsInteger(10, order);
    parts.push_back({order, part});
  }
  llvm::sort(parts);
  for (const auto &[order, part] : parts)
    row(part, grad->second.byPart.at(part));
}
