//===- ParametersTest.cpp - The parameter table ---------------------------===//

#include "lib/config/Parameters.h"

#include "gtest/gtest.h"

#include <map>

using namespace momac;

namespace {

ModelConfig parse(const std::string &json) {
  llvm::Expected<ModelConfig> config = parseModelConfig(json);
  if (!config) {
    ADD_FAILURE() << llvm::toString(config.takeError());
    return {};
  }
  return *config;
}

const char *kTinyHead = R"({"name": "t", "vocab_size": 512,
  "modalities": [{"name": "text"}, {"name": "image", "token_ranges": [[256, 512]]}],
  "d_model": 64, "n_layers": 2, "n_heads": 4, "ffn_hidden": 176, "seq_len": 16)";

std::map<std::string, ParameterSpec> byName(const ModelConfig &config) {
  std::map<std::string, ParameterSpec> table;
  for (const ParameterSpec &spec : listParameters(config))
    table[spec.name] = spec;
  return table;
}

TEST(Parameters, DenseModel) {
  ModelConfig config = parse(std::string(kTinyHead) + "}");
  std::vector<ParameterSpec> specs = listParameters(config);
  // embeddings, 2 x (4 projections + 4 qk-norm + 2 norms + 3 FFN), norm, output
  ASSERT_EQ(specs.size(), 2u + 2u * 13u + 1u);
  EXPECT_EQ(specs.front().name, "tok_embeddings.weight");
  EXPECT_EQ(specs.back().name, "output.weight");
  auto table = byName(config);
  EXPECT_EQ(table["layers.1.attention.wq.weight"].shape,
            (std::vector<int64_t>{64, 64}));
  EXPECT_EQ(table["layers.0.attention.q_norm.weight"].shape,
            (std::vector<int64_t>{4, 16}));
  EXPECT_EQ(table["layers.0.feed_forward.w2.weight"].shape,
            (std::vector<int64_t>{64, 176}));
  EXPECT_EQ(table["layers.0.attention.k_norm.bias"].role,
            ParameterRole::NormBias);
  EXPECT_EQ(table["norm.weight"].role, ParameterRole::NormWeight);
}

TEST(Parameters, NoQkNormMeansNoQkNormParameters) {
  ModelConfig config = parse(std::string(kTinyHead) + R"(, "qk_norm": false})");
  for (const ParameterSpec &spec : listParameters(config))
    EXPECT_EQ(spec.name.find("_norm.bias"), std::string::npos) << spec.name;
  EXPECT_EQ(listParameters(config).size(), 2u + 2u * 9u + 1u);
}

TEST(Parameters, ExpertGroupsRoutersAndAuxRouters) {
  ModelConfig config = parse(std::string(kTinyHead) + R"(,
    "moe": {"every": 2, "groups": [
      {"name": "text", "modalities": ["text"], "experts": 1},
      {"name": "image", "modalities": ["image"], "experts": 4}]},
    "mod": {"every": 2, "offset": 1},
    "aux_routers": true})");
  auto table = byName(config);
  // Layer 0 has experts, layer 1 a dense FFN and MoD.
  EXPECT_EQ(table["layers.0.moe.text.w1"].shape,
            (std::vector<int64_t>{1, 176, 64}));
  EXPECT_EQ(table["layers.0.moe.image.w2"].shape,
            (std::vector<int64_t>{4, 64, 176}));
  EXPECT_EQ(table.count("layers.0.moe.text.router.weight"), 0u);
  EXPECT_EQ(table.count("layers.0.moe.text.aux_router.w1.weight"), 0u);
  EXPECT_EQ(table["layers.0.moe.image.router.weight"].shape,
            (std::vector<int64_t>{4, 64}));
  EXPECT_EQ(table["layers.0.moe.image.aux_router.w1.weight"].shape,
            (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(table["layers.0.moe.image.aux_router.w2.weight"].shape,
            (std::vector<int64_t>{4, 32}));
  EXPECT_EQ(table.count("layers.1.moe.image.w1"), 0u);
  EXPECT_EQ(table["layers.1.feed_forward.w1.weight"].shape,
            (std::vector<int64_t>{176, 64}));
  EXPECT_EQ(table.count("layers.0.mod.router.weight"), 0u);
  EXPECT_EQ(table["layers.1.mod.router.weight"].shape,
            (std::vector<int64_t>{1, 64}));
  EXPECT_EQ(table["layers.1.mod.aux_router.w2.weight"].shape,
            (std::vector<int64_t>{1, 32}));
  EXPECT_TRUE(table["layers.1.mod.aux_router.w1.weight"].auxRouter);
  EXPECT_FALSE(table["layers.1.mod.router.weight"].auxRouter);
}

TEST(Parameters, WeightDecayFollowsSectionSeven) {
  for (const char *decayed :
       {"layers.0.attention.wq.weight", "layers.3.attention.wo.weight",
        "layers.0.moe.text.w1", "layers.0.moe.text.w3", "layers.0.moe.all.w2",
        "layers.0.feed_forward.w2.weight", "layers.0.moe.image.router.weight",
        "layers.1.mod.router.weight", "output.weight"})
    EXPECT_TRUE(hasWeightDecay(decayed)) << decayed;
  for (const char *plain :
       {"tok_embeddings.weight", "norm.weight",
        "layers.0.attention_norm.weight", "layers.0.ffn_norm.weight",
        "layers.0.attention.q_norm.weight", "layers.0.attention.k_norm.bias"})
    EXPECT_FALSE(hasWeightDecay(plain)) << plain;

  // Aux routers match the suffix rule but are not touched by the main step.
  ModelConfig config = parse(std::string(kTinyHead) + R"(,
    "mod": {}, "aux_routers": true})");
  auto table = byName(config);
  EXPECT_FALSE(table["layers.0.mod.aux_router.w1.weight"].weightDecay);
  EXPECT_TRUE(table["layers.0.mod.router.weight"].weightDecay);
}

} // namespace
