//===- Parameters.cpp - The parameter table of a model --------------------===//

#include "lib/config/Parameters.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"

using namespace momac;

int64_t ParameterSpec::numElements() const {
  int64_t n = 1;
  for (int64_t dim : shape)
    n *= dim;
  return n;
}

bool momac::isAuxRouterParameter(llvm::StringRef name) {
  return name.contains(".aux_router.");
}

bool momac::hasWeightDecay(llvm::StringRef name) {
  static constexpr llvm::StringRef kDecayedSuffixes[] = {
      ".wq.weight", ".wk.weight", ".wv.weight",   ".wo.weight",
      ".w1",        ".w2",        ".w3",          ".w1.weight",
      ".w2.weight", ".w3.weight", "router.weight"};
  if (name == "output.weight")
    return true;
  return llvm::any_of(kDecayedSuffixes, [&](llvm::StringRef suffix) {
    return name.ends_with(suffix);
  });
}

namespace {
class TableBuilder {
public:
  std::vector<ParameterSpec> specs;

  void add(std::string name, std::vector<int64_t> shape,
           ParameterRole role = ParameterRole::Matrix, bool aux = false) {
    bool decay = !aux && role == ParameterRole::Matrix && hasWeightDecay(name);
    specs.push_back({std::move(name), std::move(shape), role, decay, aux});
  }
};
} // namespace

std::vector<ParameterSpec> momac::listParameters(const ModelConfig &config) {
  const int64_t d = config.dModel, f = config.ffnHidden, v = config.vocabSize;
  const int64_t heads = config.nHeads, headDim = config.headDim();
  TableBuilder table;
  table.add("tok_embeddings.weight", {v, d});
  for (int64_t l = 0; l < config.nLayers; ++l) {
    std::string layer = "layers." + std::to_string(l) + ".";
    for (const char *proj : {"wq", "wk", "wv", "wo"})
      table.add(layer + "attention." + proj + ".weight", {d, d});
    if (config.qkNorm) {
      for (const char *norm : {"q_norm", "k_norm"}) {
        table.add(layer + "attention." + norm + ".weight", {heads, headDim},
                  ParameterRole::NormWeight);
        table.add(layer + "attention." + norm + ".bias", {heads, headDim},
                  ParameterRole::NormBias);
      }
    }
    table.add(layer + "attention_norm.weight", {d}, ParameterRole::NormWeight);
    table.add(layer + "ffn_norm.weight", {d}, ParameterRole::NormWeight);
    if (config.isMoeLayer(l)) {
      for (const ExpertGroup &group : config.moe->groups) {
        std::string prefix = layer + "moe." + group.name + ".";
        const int64_t e = group.experts;
        if (e > 1)
          table.add(prefix + "router.weight", {e, d});
        table.add(prefix + "w1", {e, f, d});
        table.add(prefix + "w3", {e, f, d});
        table.add(prefix + "w2", {e, d, f});
        if (config.auxRouters && e > 1) {
          table.add(prefix + "aux_router.w1.weight", {d / 2, d},
                    ParameterRole::Matrix, /*aux=*/true);
          table.add(prefix + "aux_router.w2.weight", {e, d / 2},
                    ParameterRole::Matrix, /*aux=*/true);
        }
      }
    } else {
      table.add(layer + "feed_forward.w1.weight", {f, d});
      table.add(layer + "feed_forward.w3.weight", {f, d});
      table.add(layer + "feed_forward.w2.weight", {d, f});
    }
    if (config.isModLayer(l)) {
      table.add(layer + "mod.router.weight", {1, d});
      if (config.auxRouters) {
        table.add(layer + "mod.aux_router.w1.weight", {d / 2, d},
                  ParameterRole::Matrix, /*aux=*/true);
        table.add(layer + "mod.aux_router.w2.weight", {1, d / 2},
                  ParameterRole::Matrix, /*aux=*/true);
      }
    }
  }
  table.add("norm.weight", {d}, ParameterRole::NormWeight);
  table.add("output.weight", {v, d});
  return std::move(table.specs);
}
