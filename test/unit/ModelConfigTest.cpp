//===- ModelConfigTest.cpp - Model description parsing --------------------===//
//
// Valid descriptions get their defaults; every invalid one is rejected with
// exactly the message a user would read, naming the JSON path.
//
//===----------------------------------------------------------------------===//

#include "lib/config/ModelConfig.h"

#include "llvm/Support/MemoryBuffer.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

#include <map>
#include <string>
#include <vector>

using namespace momac;

namespace {

/// A small valid description, as (key, JSON text) in file order.
const std::vector<std::pair<std::string, std::string>> kBase = {
    {"name", R"("tiny")"},
    {"vocab_size", "512"},
    {"modalities",
     R"([{"name": "text"}, {"name": "image", "token_ranges": [[256, 512]]}])"},
    {"d_model", "64"},
    {"n_layers", "2"},
    {"n_heads", "4"},
    {"ffn_hidden", "176"},
    {"seq_len", "16"},
};

const char *kGroups4t4i =
    R"({"groups": [{"name": "text", "modalities": ["text"], "experts": 4},
                   {"name": "image", "modalities": ["image"], "experts": 4}]})";

/// The base description with some keys replaced or added (value = JSON text)
/// and some removed (value = "<remove>").
std::string describe(const std::map<std::string, std::string> &changes = {}) {
  std::string out = "{";
  std::map<std::string, std::string> pending = changes;
  auto emit = [&](const std::string &key, const std::string &value) {
    if (value == "<remove>")
      return;
    out += (out.size() > 1 ? ", " : "") + ("\"" + key + "\": " + value);
  };
  for (const auto &[key, value] : kBase) {
    auto it = pending.find(key);
    emit(key, it == pending.end() ? value : it->second);
    if (it != pending.end())
      pending.erase(it);
  }
  for (const auto &[key, value] : pending)
    emit(key, value);
  return out + "}";
}

std::string errorOf(const std::string &json) {
  llvm::Expected<ModelConfig> config = parseModelConfig(json);
  if (config)
    return "<accepted>";
  return llvm::toString(config.takeError());
}

TEST(ModelConfig, BaseIsValidAndGetsDefaults) {
  llvm::Expected<ModelConfig> config = parseModelConfig(describe());
  ASSERT_TRUE(bool(config)) << llvm::toString(config.takeError());
  EXPECT_EQ(config->name, "tiny");
  EXPECT_EQ(config->headDim(), 16);
  EXPECT_EQ(config->norm, NormOrder::Swin);
  EXPECT_DOUBLE_EQ(config->normEps, 1e-5);
  EXPECT_TRUE(config->qkNorm);
  EXPECT_DOUBLE_EQ(config->ropeTheta, 10000.0);
  EXPECT_DOUBLE_EQ(config->zLoss, 1e-5);
  EXPECT_FALSE(config->moe.has_value());
  EXPECT_FALSE(config->mod.has_value());
  EXPECT_FALSE(config->auxRouters);
  EXPECT_EQ(config->train.batchSize, 8);
  EXPECT_EQ(config->train.microBatches, 1);
  EXPECT_EQ(config->train.totalSteps, 1000);
  EXPECT_DOUBLE_EQ(config->train.lr, 1e-4);
  EXPECT_DOUBLE_EQ(config->train.minLr, 1e-6);
  EXPECT_EQ(config->train.warmupSteps, 4000);
  EXPECT_DOUBLE_EQ(config->train.beta1, 0.9);
  EXPECT_DOUBLE_EQ(config->train.beta2, 0.95);
  EXPECT_DOUBLE_EQ(config->train.eps, 1e-5);
  EXPECT_DOUBLE_EQ(config->train.weightDecay, 0.1);
  EXPECT_DOUBLE_EQ(config->train.gradClip, 1.0);
  EXPECT_EQ(config->train.precision, Precision::FP32);
  EXPECT_EQ(config->train.seed, 0);
}

TEST(ModelConfig, DefaultModalityOwnsTheComplement) {
  llvm::Expected<ModelConfig> config = parseModelConfig(describe(
      {{"modalities", R"([{"name": "image", "token_ranges": [[100, 200],
           [300, 400]]}, {"name": "text"}])"}}));
  ASSERT_TRUE(bool(config)) << llvm::toString(config.takeError());
  const Modality &text = config->modalities[1];
  ASSERT_EQ(text.ranges.size(), 3u);
  EXPECT_EQ(text.ranges[0].lo, 0);
  EXPECT_EQ(text.ranges[0].hi, 100);
  EXPECT_EQ(text.ranges[1].lo, 200);
  EXPECT_EQ(text.ranges[1].hi, 300);
  EXPECT_EQ(text.ranges[2].lo, 400);
  EXPECT_EQ(text.ranges[2].hi, 512);
  EXPECT_EQ(config->modalityOf(0), 1);
  EXPECT_EQ(config->modalityOf(150), 0);
  EXPECT_EQ(config->modalityOf(511), 1);
  EXPECT_EQ(config->modalityOf(512), -1);
}

// Issue 11 item 1 (MODEL_SPEC section 1): "token_ranges": [] is the
// default modality, as if the key were omitted.
TEST(ModelConfig, EmptyRangeListIsTheDefaultModality) {
  llvm::Expected<ModelConfig> config = parseModelConfig(describe(
      {{"modalities", R"([{"name": "image", "token_ranges": [[100, 200]]},
                          {"name": "text", "token_ranges": []}])"}}));
  ASSERT_TRUE(bool(config)) << llvm::toString(config.takeError());
  const Modality &text = config->modalities[1];
  EXPECT_TRUE(text.isDefault());
  ASSERT_EQ(text.ranges.size(), 2u);
  EXPECT_EQ(text.ranges[0].hi, 100);
  EXPECT_EQ(text.ranges[1].lo, 200);
  EXPECT_EQ(config->modalityOf(150), 0);
  EXPECT_EQ(config->modalityOf(300), 1);
}

TEST(ModelConfig, ChameleonLayoutWhenModalitiesAreOmitted) {
  llvm::Expected<ModelConfig> config = parseModelConfig(
      describe({{"modalities", "<remove>"}, {"vocab_size", "65536"}}));
  ASSERT_TRUE(bool(config)) << llvm::toString(config.takeError());
  ASSERT_EQ(config->modalities.size(), 2u);
  EXPECT_EQ(config->modalities[0].name, "text");
  EXPECT_EQ(config->modalities[1].name, "image");
  EXPECT_EQ(config->modalityOf(3), 0);
  EXPECT_EQ(config->modalityOf(4), 1);
  EXPECT_EQ(config->modalityOf(8195), 1);
  EXPECT_EQ(config->modalityOf(8196), 0);
  EXPECT_EQ(config->modalityOf(65535), 0);
}

TEST(ModelConfig, MoeAndModLayers) {
  llvm::Expected<ModelConfig> config = parseModelConfig(describe(
      {{"n_layers", "6"},
       {"moe", R"({"every": 2, "capacity_factor": 1.5, "gumbel": true,
                   "groups": [{"name": "all", "modalities": ["image", "text"],
                               "experts": 8}]})"},
       {"mod", R"({"every": 3, "offset": 1, "capacity": 0.5})"},
       {"aux_routers", "true"},
       {"train", R"({"precision": "bf16", "lr": 1, "grad_clip": 0})"}}));
  ASSERT_TRUE(bool(config)) << llvm::toString(config.takeError());
  EXPECT_TRUE(config->isMoeLayer(0));
  EXPECT_FALSE(config->isMoeLayer(1));
  EXPECT_TRUE(config->isMoeLayer(4));
  EXPECT_FALSE(config->isModLayer(0));
  EXPECT_TRUE(config->isModLayer(1));
  EXPECT_TRUE(config->isModLayer(4));
  EXPECT_DOUBLE_EQ(config->moe->capacityFactor, 1.5);
  EXPECT_TRUE(config->moe->gumbel);
  EXPECT_EQ(config->groupOfModality(0), 0u);
  std::vector<TokenRange> ranges = config->groupRanges(config->moe->groups[0]);
  // text [0, 256) and image [256, 512) merge into one range.
  ASSERT_EQ(ranges.size(), 1u);
  EXPECT_EQ(ranges[0].lo, 0);
  EXPECT_EQ(ranges[0].hi, 512);
  EXPECT_EQ(config->train.precision, Precision::BF16);
  EXPECT_DOUBLE_EQ(config->train.lr, 1.0); // float fields accept integers
  EXPECT_DOUBLE_EQ(config->train.gradClip, 0.0);
}

struct BadDescription {
  const char *what;
  std::string json;
  std::string message;
};

std::ostream &operator<<(std::ostream &os, const BadDescription &bad) {
  return os << bad.what;
}

class RejectsBadDescription : public testing::TestWithParam<BadDescription> {};

TEST_P(RejectsBadDescription, WithItsMessage) {
  EXPECT_EQ(errorOf(GetParam().json), GetParam().message);
}

const std::string kKnownTopKeys =
    "name, vocab_size, modalities, d_model, n_layers, n_heads, ffn_hidden, "
    "seq_len, norm, norm_eps, qk_norm, rope_theta, z_loss, moe, mod, "
    "aux_routers, train";

INSTANTIATE_TEST_SUITE_P(
    ModelConfig, RejectsBadDescription,
    testing::Values(
        // Syntax and the top level.
        BadDescription{"syntax", R"({"name": })",
                       "line 1, column 10: invalid JSON: Invalid JSON value"},
        BadDescription{"empty file", "",
                       "line 1, column 1: invalid JSON: Unexpected EOF"},
        BadDescription{"top level is a list", "[]",
                       "(top level): expected an object, got an empty list"},
        BadDescription{"unknown key", describe({{"dmodel", "64"}}),
                       "dmodel: unknown key (known keys: " + kKnownTopKeys +
                           ")"},
        // Required keys and types.
        BadDescription{"missing name", describe({{"name", "<remove>"}}),
                       "name: missing required key"},
        BadDescription{"missing d_model", describe({{"d_model", "<remove>"}}),
                       "d_model: missing required key"},
        BadDescription{"name not a string", describe({{"name", "3"}}),
                       "name: expected a string, got 3"},
        BadDescription{"empty name", describe({{"name", R"("")"}}),
                       "name: expected a non-empty string, got \"\""},
        BadDescription{"float for an integer", describe({{"d_model", "64.0"}}),
                       "d_model: expected an integer, got 64.0"},
        BadDescription{"string for an integer",
                       describe({{"d_model", R"("64")"}}),
                       "d_model: expected an integer, got \"64\""},
        BadDescription{"null for an integer", describe({{"seq_len", "null"}}),
                       "seq_len: expected an integer, got null"},
        // Ranges of integers.
        BadDescription{"zero d_model", describe({{"d_model", "0"}}),
                       "d_model: expected an integer >= 1, got 0"},
        BadDescription{"negative d_model", describe({{"d_model", "-64"}}),
                       "d_model: expected an integer >= 1, got -64"},
        BadDescription{"d_model over 2^31-1",
                       describe({{"d_model", "2147483648"}}),
                       "d_model: expected an integer <= 2147483647, got "
                       "2147483648"},
        BadDescription{"huge integer",
                       describe({{"ffn_hidden", "99999999999999999999999"}}),
                       "ffn_hidden: expected an integer, got 1e+23"},
        BadDescription{"too many layers", describe({{"n_layers", "5000"}}),
                       "n_layers: expected an integer <= 4096, got 5000"},
        BadDescription{"vocabulary of one", describe({{"vocab_size", "1"}}),
                       "vocab_size: expected an integer >= 2, got 1"},
        // Cross-field checks on the backbone.
        BadDescription{"heads do not divide d_model",
                       describe({{"n_heads", "5"}}),
                       "n_heads: expected a divisor of d_model (64), got 5"},
        BadDescription{"odd head_dim",
                       describe({{"d_model", "12"}, {"n_heads", "4"}}),
                       "n_heads: expected an even head_dim = d_model / n_heads "
                       "(RoPE rotates pairs), got 12 / 4 = 3"},
        // Enumerations, floats and booleans.
        BadDescription{"unknown norm", describe({{"norm", R"("post")"}}),
                       "norm: expected \"swin\" or \"pre\", got \"post\""},
        BadDescription{"zero norm_eps", describe({{"norm_eps", "0"}}),
                       "norm_eps: expected a number > 0, got 0"},
        BadDescription{"infinite rope_theta",
                       describe({{"rope_theta", "1e999"}}),
                       "rope_theta: expected a number > 0, got inf"},
        BadDescription{"negative z_loss", describe({{"z_loss", "-0.5"}}),
                       "z_loss: expected a number >= 0, got -0.5"},
        BadDescription{"string for a boolean",
                       describe({{"qk_norm", R"("yes")"}}),
                       "qk_norm: expected true or false, got \"yes\""},
        // Modalities.
        BadDescription{"no modalities with a small vocabulary",
                       describe({{"modalities", "<remove>"}}),
                       "modalities: missing: the default layout (image owns "
                       "[4, 8196)) needs vocab_size >= 8196, got 512; list "
                       "the modalities"},
        BadDescription{"empty modality list", describe({{"modalities", "[]"}}),
                       "modalities: expected a non-empty list, got an empty "
                       "list"},
        BadDescription{"modality is not an object",
                       describe({{"modalities", R"(["text"])"}}),
                       "modalities[0]: expected an object, got \"text\""},
        BadDescription{"bad modality name",
                       describe({{"modalities", R"([{"name": "te xt"}])"}}),
                       "modalities[0].name: expected a name matching "
                       "[A-Za-z0-9_]+, got \"te xt\""},
        BadDescription{"duplicate modality",
                       describe({{"modalities",
                                  R"([{"name": "text"}, {"name": "text",
                                      "token_ranges": [[0, 4]]}])"}}),
                       "modalities[1].name: expected a unique name, got "
                       "\"text\" (also modalities[0].name)"},
        BadDescription{
            "unknown modality key",
            describe({{"modalities", R"([{"name": "text", "ranges": []}])"}}),
            "modalities[0].ranges: unknown key (known keys: name, "
            "token_ranges)"},
        BadDescription{"reversed range",
                       describe({{"modalities",
                                  R"([{"name": "text"}, {"name": "image",
                                      "token_ranges": [[300, 256]]}])"}}),
                       "modalities[1].token_ranges[0]: expected [lo, hi) with "
                       "0 <= lo < hi <= vocab_size (512), got [300, 256]"},
        BadDescription{"range past the vocabulary",
                       describe({{"modalities",
                                  R"([{"name": "text"}, {"name": "image",
                                      "token_ranges": [[256, 600]]}])"}}),
                       "modalities[1].token_ranges[0]: expected [lo, hi) with "
                       "0 <= lo < hi <= vocab_size (512), got [256, 600]"},
        BadDescription{"range of one number",
                       describe({{"modalities",
                                  R"([{"name": "text"}, {"name": "image",
                                      "token_ranges": [[256]]}])"}}),
                       "modalities[1].token_ranges[0]: expected a range [lo, "
                       "hi], got a list"},
        BadDescription{"float bound",
                       describe({{"modalities",
                                  R"([{"name": "text"}, {"name": "image",
                                      "token_ranges": [[256.5, 300]]}])"}}),
                       "modalities[1].token_ranges[0][0]: expected an integer, "
                       "got 256.5"},
        BadDescription{"empty range list next to the default modality",
                       describe({{"modalities",
                                  R"([{"name": "text"}, {"name": "image",
                                      "token_ranges": []}])"}}),
                       "modalities[1].token_ranges: missing: only one modality "
                       "may omit its ranges (or list none), and modalities[0] "
                       "(\"text\") already owns every unlisted id"},
        BadDescription{
            "overlapping ranges",
            describe({{"modalities",
                       R"([{"name": "text", "token_ranges": [[0, 300]]},
                                      {"name": "image", "token_ranges": [[256, 512]]}])"}}),
            "modalities[1].token_ranges[0]: expected token ranges "
            "that do not overlap, got [256, 512), which overlaps "
            "modalities[0].token_ranges[0] ([0, 300))"},
        BadDescription{"two default modalities",
                       describe({{"modalities",
                                  R"([{"name": "text"}, {"name": "image"}])"}}),
                       "modalities[1].token_ranges: missing: only one modality "
                       "may omit its ranges (or list none), and modalities[0] "
                       "(\"text\") already owns every unlisted id"},
        BadDescription{
            "ids owned by nobody",
            describe({{"modalities",
                       R"([{"name": "text", "token_ranges": [[0, 100]]},
                                      {"name": "image", "token_ranges": [[256, 512]]}])"}}),
            "modalities: expected the token ranges to cover [0, "
            "vocab_size) when no modality is the default, but [100, "
            "256) belongs to no modality"},
        BadDescription{
            "default modality owns nothing",
            describe({{"modalities",
                       R"([{"name": "text", "token_ranges": [[0, 256]]},
                                      {"name": "image", "token_ranges": [[256, 512]]},
                                      {"name": "audio"}])"}}),
            "modalities[2]: expected the default modality \"audio\" "
            "to own some ids, but the other modalities' ranges cover "
            "[0, 512)"},
        // Mixture of experts.
        BadDescription{"moe is not an object", describe({{"moe", R"("yes")"}}),
                       "moe: expected an object, got \"yes\""},
        BadDescription{"moe without groups", describe({{"moe", "{}"}}),
                       "moe.groups: missing required key"},
        BadDescription{"empty groups", describe({{"moe", R"({"groups": []})"}}),
                       "moe.groups: expected a non-empty list, got an empty "
                       "list"},
        BadDescription{
            "zero experts (the spec's example)",
            describe({{"moe", R"({"groups": [
                           {"name": "text", "modalities": ["text"], "experts": 4},
                           {"name": "image", "modalities": ["image"], "experts": 0}]})"}}),
            "moe.groups[1].experts: expected an integer >= 1, got 0"},
        BadDescription{"group without experts",
                       describe({{"moe", R"({"groups": [
                           {"name": "all", "modalities": ["text", "image"]}]})"}}),
                       "moe.groups[0].experts: missing required key"},
        BadDescription{"unknown modality in a group",
                       describe({{"moe", R"({"groups": [
                           {"name": "all", "modalities": ["text", "audio"], "experts": 2}]})"}}),
                       "moe.groups[0].modalities[1]: expected the name of a "
                       "modality (text, image), got \"audio\""},
        BadDescription{"modality in two groups",
                       describe({{"moe", R"({"groups": [
                           {"name": "a", "modalities": ["text"], "experts": 2},
                           {"name": "b", "modalities": ["image", "text"], "experts": 2}]})"}}),
                       "moe.groups[1].modalities[1]: modality \"text\" is "
                       "already in group \"a\" (each modality belongs to "
                       "exactly one group)"},
        BadDescription{"modality in no group", describe({{"moe", R"({"groups": [
                           {"name": "t", "modalities": ["text"], "experts": 2}]})"}}),
                       "moe.groups: expected every modality in exactly one "
                       "group, but modality \"image\" is in none"},
        BadDescription{"duplicate group names",
                       describe({{"moe", R"({"groups": [
                           {"name": "g", "modalities": ["text"], "experts": 2},
                           {"name": "g", "modalities": ["image"], "experts": 2}]})"}}),
                       "moe.groups[1].name: expected a unique name, got \"g\" "
                       "(also moe.groups[0].name)"},
        BadDescription{"zero capacity factor",
                       describe({{"moe", R"({"capacity_factor": 0, "groups": [
                           {"name": "all", "modalities": ["text", "image"], "experts": 2}]})"}}),
                       "moe.capacity_factor: expected a number > 0, got 0"},
        BadDescription{"moe.every zero",
                       describe({{"moe", R"({"every": 0, "groups": [
                           {"name": "all", "modalities": ["text", "image"], "experts": 2}]})"}}),
                       "moe.every: expected an integer >= 1, got 0"},
        BadDescription{"integer for gumbel",
                       describe({{"moe", R"({"gumbel": 1, "groups": [
                           {"name": "all", "modalities": ["text", "image"], "experts": 2}]})"}}),
                       "moe.gumbel: expected true or false, got 1"},
        // Mixture of depths.
        BadDescription{"MoD capacity above 1",
                       describe({{"mod", R"({"capacity": 1.5})"}}),
                       "mod.capacity: expected a number in (0, 1], got 1.5"},
        BadDescription{"MoD capacity zero",
                       describe({{"mod", R"({"capacity": 0})"}}),
                       "mod.capacity: expected a number in (0, 1], got 0"},
        BadDescription{"MoD offset not below every",
                       describe({{"mod", R"({"every": 2, "offset": 2})"}}),
                       "mod.offset: expected an integer in [0, mod.every) = "
                       "[0, 2), got 2"},
        BadDescription{"float MoD period",
                       describe({{"mod", R"({"every": 2.5})"}}),
                       "mod.every: expected an integer, got 2.5"},
        BadDescription{"unknown MoD key",
                       describe({{"mod", R"({"ratio": 0.5})"}}),
                       "mod.ratio: unknown key (known keys: every, offset, "
                       "capacity)"},
        // Training.
        BadDescription{"unknown precision",
                       describe({{"train", R"({"precision": "fp16"})"}}),
                       "train.precision: expected \"fp32\" or \"bf16\", got "
                       "\"fp16\""},
        BadDescription{"zero batch",
                       describe({{"train", R"({"batch_size": 0})"}}),
                       "train.batch_size: expected an integer >= 1, got 0"},
        BadDescription{"beta2 of one", describe({{"train", R"({"beta2": 1})"}}),
                       "train.beta2: expected a number in [0, 1), got 1"},
        BadDescription{"min_lr above lr",
                       describe({{"train", R"({"lr": 1e-4, "min_lr": 1e-3})"}}),
                       "train.min_lr: expected a number <= train.lr (0.0001), "
                       "got 0.001"},
        BadDescription{"negative weight decay",
                       describe({{"train", R"({"weight_decay": -0.1})"}}),
                       "train.weight_decay: expected a number >= 0, got -0.1"},
        BadDescription{"negative grad clip",
                       describe({{"train", R"({"grad_clip": -1})"}}),
                       "train.grad_clip: expected a number >= 0 (0 disables "
                       "clipping), got -1"},
        BadDescription{"infinite learning rate",
                       describe({{"train", R"({"lr": 1e999})"}}),
                       "train.lr: expected a number > 0, got inf"},
        BadDescription{"string learning rate",
                       describe({{"train", R"({"lr": "big"})"}}),
                       "train.lr: expected a number, got \"big\""},
        BadDescription{"negative seed",
                       describe({{"train", R"({"seed": -1})"}}),
                       "train.seed: expected an integer >= 0, got -1"},
        BadDescription{"train is a list", describe({{"train", "[1]"}}),
                       "train: expected an object, got a list"}),
    [](const testing::TestParamInfo<BadDescription> &info) {
      std::string name;
      for (char c : std::string(info.param.what))
        name += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
      return name;
    });

TEST(ModelConfig, DeepNestingIsAnErrorNotACrash) {
  std::string deep(100000, '[');
  std::string message = errorOf(deep);
  EXPECT_THAT(message, testing::HasSubstr("invalid JSON"));
}

TEST(ModelConfig, MissingFileNamesTheProblem) {
  llvm::Expected<ModelConfig> config =
      loadModelConfig("/nonexistent/model.json");
  ASSERT_FALSE(bool(config));
  EXPECT_THAT(llvm::toString(config.takeError()),
              testing::HasSubstr("cannot read the model description"));
}

} // namespace

namespace {

/// Every prefix of a real description, and every scalar in it replaced by
/// values of other types and extremes, is either accepted or rejected with a
/// one-line message: nothing crashes, asserts or hangs.
TEST(ModelConfig, MutatedDescriptionsNeverCrash) {
  std::string path = std::string(MOMAC_SOURCE_DIR) +
                     "/examples/models/tiny/mod_moe_4t4i_aux.json";
  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> file =
      llvm::MemoryBuffer::getFile(path);
  ASSERT_TRUE(bool(file)) << path;
  std::string text = (*file)->getBuffer().str();

  auto expectOneLine = [](const std::string &json) {
    llvm::Expected<ModelConfig> config = parseModelConfig(json);
    if (!config) {
      std::string message = llvm::toString(config.takeError());
      EXPECT_FALSE(message.empty());
      EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    }
  };
  for (size_t length = 0; length < text.size(); ++length)
    expectOneLine(text.substr(0, length));

  const char *replacements[] = {"0",
                                "-1",
                                "2147483647",
                                "1e999",
                                "-0.0",
                                "0.5",
                                "\"x\"",
                                "[]",
                                "{}",
                                "null",
                                "true",
                                "[[1, 0]]",
                                "9223372036854775808"};
  // Replace each number, string or literal that follows a ": " or "[".
  for (size_t at = 0; at < text.size(); ++at) {
    if (!(std::isdigit(static_cast<unsigned char>(text[at])) ||
          text[at] == '"' || text[at] == 't' || text[at] == 'f') ||
        at == 0 || !(text[at - 1] == ' ' || text[at - 1] == '['))
      continue;
    size_t end = at + 1;
    if (text[at] == '"')
      end = text.find('"', at + 1) + 1;
    else
      while (end < text.size() &&
             (std::isalnum(static_cast<unsigned char>(text[end])) ||
              text[end] == '.' || text[end] == '-'))
        ++end;
    for (const char *replacement : replacements)
      expectOneLine(text.substr(0, at) + replacement + text.substr(end));
  }
}

TEST(ModelConfig, SizesThatOverflowAreErrors) {
  EXPECT_EQ(errorOf(describe({{"seq_len", "2147483647"},
                              {"train", R"({"batch_size": 2})"}})),
            "train.batch_size: expected batch_size * seq_len <= 2147483647 "
            "(token indices are 32-bit), got 2 * 2147483647");
  EXPECT_EQ(errorOf(describe({{"d_model", "2147483646"},
                              {"n_heads", "1"},
                              {"ffn_hidden", "2147483647"}})),
            "(top level): expected at most 1e+15 parameters, got 6.5e+19");
}

} // namespace
