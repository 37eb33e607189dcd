//===- ModelStats.cpp - Sizes, FLOPs and memory of a model ----------------===//

#include "lib/config/ModelStats.h"

#include "lib/config/Parameters.h"
#include "lib/config/ShardUnits.h"

using namespace momac;

namespace {

/// Expected per-token cost of one layer for a token routed to `group`
/// (nullptr: dense FFN).
struct LayerCost {
  double params = 0;
  double flops = 0;
};

LayerCost layerCost(const ModelConfig &config, int64_t layer,
                    const ExpertGroup *group) {
  const double d = double(config.dModel), f = double(config.ffnHidden);
  const double context = (double(config.seqLen) + 1) / 2;
  const double ffnParams = 3 * d * f;
  const double normParams = 2 * d + (config.qkNorm ? 4 * d : 0);

  LayerCost block;
  block.params = 4 * d * d + normParams;
  block.flops = 2 * 4 * d * d; // q, k, v, o projections
  if (group && group->experts > 1) {
    double experts = double(group->experts);
    double capacity = config.moe->capacityFactor;
    block.params += experts * d + capacity * ffnParams;
    block.flops += 2 * experts * d + capacity * 2 * ffnParams;
  } else {
    block.params += ffnParams;
    block.flops += 2 * ffnParams;
  }

  if (!config.isModLayer(layer)) {
    block.flops += 2 * 2 * d * context; // QK^T and PV
    return block;
  }
  // MoD: the block runs for a fraction c_d of the tokens, whose attention
  // context shrinks by c_d too; the router runs for every token.
  const double kept = config.mod->capacity;
  LayerCost cost;
  cost.params = d + kept * block.params;
  cost.flops = 2 * d + kept * (block.flops + 2 * 2 * d * context * kept);
  return cost;
}

TokenCost tokenCost(const ModelConfig &config, std::string label,
                    const ExpertGroup *group) {
  const double d = double(config.dModel), v = double(config.vocabSize);
  TokenCost cost;
  cost.label = std::move(label);
  cost.activeParams = 2 * v * d + d; // embeddings, output, final norm
  cost.forwardFlops = 2 * v * d;     // output projection
  for (int64_t l = 0; l < config.nLayers; ++l) {
    LayerCost layer =
        layerCost(config, l, config.isMoeLayer(l) ? group : nullptr);
    cost.activeParams += layer.params;
    cost.forwardFlops += layer.flops;
  }
  cost.trainFlops = 3 * cost.forwardFlops;
  return cost;
}

} // namespace

ModelStats momac::computeModelStats(const ModelConfig &config) {
  ModelStats stats;
  for (const ParameterSpec &param : listParameters(config)) {
    int64_t n = param.numElements();
    stats.totalParams += n;
    llvm::StringRef name = param.name;
    if (name == "tok_embeddings.weight" || name == "output.weight")
      stats.embeddingParams += n;
    if (param.auxRouter)
      stats.auxRouterParams += n;
    else
      stats.trainableParams += n;
    if (name.contains(".moe.") && !name.contains("router"))
      stats.expertParams += n;
  }
  for (int64_t l = 0; l < config.nLayers; ++l) {
    stats.moeLayers += config.isMoeLayer(l);
    stats.modLayers += config.isModLayer(l);
  }

  for (unsigned m = 0; m < config.modalities.size(); ++m) {
    const ExpertGroup *group =
        config.moe ? &config.moe->groups[config.groupOfModality(m)] : nullptr;
    stats.perModality.push_back(
        tokenCost(config, config.modalities[m].name, group));
  }
  ModelConfig dense = config;
  dense.moe.reset();
  dense.mod.reset();
  stats.dense = tokenCost(dense, "dense", nullptr);
  const double outputFlops = 2.0 * double(config.vocabSize) * config.dModel;
  double meanFlops = 0;
  for (const TokenCost &cost : stats.perModality)
    meanFlops += cost.forwardFlops / double(stats.perModality.size());
  double denseLayerFlops =
      (stats.dense.forwardFlops - outputFlops) / double(config.nLayers);
  stats.denseEquivalentLayers = (meanFlops - outputFlops) / denseLayerFlops;

  // fp32 master weights and gradients for every parameter (the gradient
  // contract includes the aux routers); AdamW moments for the trained ones.
  stats.parameterBytes = 4 * stats.totalParams;
  stats.gradientBytes = 4 * stats.totalParams;
  stats.optimizerBytes = 2 * 4 * stats.trainableParams;
  return stats;
}

ShardedStateBytes momac::computeShardedStateBytes(const ModelConfig &config,
                                                  int64_t ranks) {
  std::vector<std::pair<std::string, int64_t>> parameters;
  for (const ParameterSpec &spec : listParameters(config))
    parameters.emplace_back(spec.name, spec.numElements());
  ShardedStateBytes bytes;
  bytes.ranks = ranks;
  int64_t largest = 0;
  for (const ShardUnit &unit : planShardUnits(parameters)) {
    bytes.parameterBytes += 4 * unit.shardElements(ranks);
    if (unit.elements > largest) {
      largest = unit.elements;
      bytes.largestUnit = unit.name;
    }
  }
  bytes.gradientBytes = bytes.parameterBytes;
  bytes.optimizerBytes = 2 * bytes.parameterBytes;
  bytes.gatheredBytes = 2 * 4 * largest;
  return bytes;
}
