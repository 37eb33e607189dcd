//===- ModelStats.h - Sizes, FLOPs and memory of a model --------*- C++ -*-===//
//
// The arithmetic behind `momac --report`. Conventions (stated in the report):
// - FLOPs count matrix multiplies only (2 per multiply-add): the linear maps,
//   the routers, the output projection and attention's QK^T and PV. A causal
//   token attends to (S + 1) / 2 positions on average. Norms, RoPE, softmax
//   and element-wise work are left out, as in the MoMa and Chinchilla papers.
// - Expected cost per token: an expert-choice group with E > 1 runs
//   capacity_factor experts per token on average (E experts x k tokens, with
//   k = c n / E); a MoD layer runs its block for a fraction c_d of the tokens
//   and its attention over a context c_d as long.
// - A training step costs 3x the forward pass (backward is 2x).
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_LIB_CONFIG_MODELSTATS_H
#define MOMAC_LIB_CONFIG_MODELSTATS_H

#include "lib/config/ModelConfig.h"

#include <string>
#include <vector>

namespace momac {

struct TokenCost {
  /// Who pays this cost: a modality name, or "dense" for the baseline.
  std::string label;
  /// Parameters that touch the token, in expectation (embeddings included).
  double activeParams = 0;
  double forwardFlops = 0;
  double trainFlops = 0;
};

struct ModelStats {
  int64_t totalParams = 0;
  int64_t embeddingParams = 0; // tok_embeddings + output
  int64_t expertParams = 0;    // FFN weights inside MoE groups
  int64_t auxRouterParams = 0; // trained separately (section 6)
  int64_t trainableParams = 0; // updated by the training step
  int64_t moeLayers = 0;
  int64_t modLayers = 0;
  std::vector<TokenCost> perModality;
  /// The dense model with the same backbone (d, L, f, S, V; no MoE, no MoD),
  /// the FLOPs reference the MoMa paper compares against.
  TokenCost dense;
  /// The depth of the FLOPs-matched dense model of the same width: how many
  /// dense layers cost what this model's layers cost per token (mean over
  /// modalities). The paper's MoD layouts (14 layers at 90M) match the dense
  /// ones (8 layers) this way.
  double denseEquivalentLayers = 0;
  /// Bytes of a training step's persistent state (fp32 master weights).
  int64_t parameterBytes = 0;
  int64_t gradientBytes = 0;
  int64_t optimizerBytes = 0; // AdamW m and v
  int64_t totalStateBytes() const {
    return parameterBytes + gradientBytes + optimizerBytes;
  }
};

ModelStats computeModelStats(const ModelConfig &config);

/// What each of `ranks` FSDP ranks holds (momac --fsdp, runtime/fsdp): its
/// shard of every unit's parameters, gradients and AdamW moments (shards
/// are padded: lib/config/ShardUnits.h), and at most two gathered units at
/// once (the one computing and the one prefetched).
struct ShardedStateBytes {
  int64_t ranks = 1;
  int64_t parameterBytes = 0;
  int64_t gradientBytes = 0;
  int64_t optimizerBytes = 0;
  int64_t gatheredBytes = 0;
  std::string largestUnit;
  int64_t totalBytes() const {
    return parameterBytes + gradientBytes + optimizerBytes + gatheredBytes;
  }
};

ShardedStateBytes computeShardedStateBytes(const ModelConfig &config,
                                           int64_t ranks);

} // namespace momac

#endif // MOMAC_LIB_CONFIG_MODELSTATS_H
