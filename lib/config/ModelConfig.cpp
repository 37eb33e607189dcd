//===- ModelConfig.cpp - Parsing and validating model descriptions --------===//
//
// The reader walks the JSON with an explicit path ("moe.groups[1].experts")
// and stops at the first problem, so every error is one line that says where,
// what was expected and what was found. It never asserts: any JSON at all is
// valid input to this file.
//
//===----------------------------------------------------------------------===//

#include "lib/config/ModelConfig.h"

#include "lib/support/Json.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Regex.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>

using namespace momac;
using llvm::json::Array;
using llvm::json::Object;
using llvm::json::Value;

namespace {

constexpr int64_t kMaxInt = (int64_t(1) << 31) - 1;
constexpr int64_t kMaxLayers = 4096;
// Chameleon's layout: the 8192 image codebook ids follow 4 special ids.
constexpr TokenRange kDefaultImageRange{4, 8196};

std::string joinKey(const std::string &path, llvm::StringRef key) {
  return path.empty() ? key.str() : path + "." + key.str();
}
std::string joinIndex(const std::string &path, size_t index) {
  return path + "[" + std::to_string(index) + "]";
}

/// Renders a JSON value for "got ..." in a message, short and unambiguous:
/// a float always shows a fraction, so `4.0` is not mistaken for an integer.
std::string describe(const Value &value) {
  switch (value.kind()) {
  case Value::Null:
    return "null";
  case Value::Boolean:
    return *value.getAsBoolean() ? "true" : "false";
  case Value::Object:
    return "an object";
  case Value::Array:
    return value.getAsArray()->empty() ? "an empty list" : "a list";
  case Value::String: {
    std::string text = llvm::formatv("{0}", value).str();
    return text.size() > 40 ? text.substr(0, 37) + "...\"" : text;
  }
  case Value::Number: {
    if (auto asUnsigned = value.getAsUINT64())
      return std::to_string(*asUnsigned);
    double number = *value.getAsNumber();
    // Negative JSON integers are the only other exact integers; they print
    // the same either way.
    if (auto asInt = value.getAsInteger();
        asInt && number < 0 && double(*asInt) == number)
      return std::to_string(*asInt);
    // The shortest text that reads back as the same double.
    std::string text;
    for (int precision = 1; precision <= 17; ++precision) {
      text = llvm::formatv("{0}", llvm::format("%.*g", precision, number));
      if (std::strtod(text.c_str(), nullptr) == number)
        break;
    }
    if (text.find_first_of(".eEn") == std::string::npos)
      text += ".0";
    return text;
  }
  }
  return "a value";
}

std::string describeRanges(const std::vector<TokenRange> &ranges) {
  std::string out;
  for (const TokenRange &range : ranges)
    out += (out.empty() ? "" : ", ") +
           llvm::formatv("[{0}, {1})", range.lo, range.hi).str();
  return out;
}

/// Walks a description, first error wins.
class DescriptionReader {
public:
  bool failed() const { return error.has_value(); }
  llvm::Error takeError() {
    return llvm::createStringError(llvm::inconvertibleErrorCode(), *error);
  }

  void fail(const std::string &path, const llvm::Twine &message) {
    if (!error)
      error = (path.empty() ? std::string("(top level)") : path) + ": " +
              message.str();
  }
  void expected(const std::string &path, const llvm::Twine &what,
                const Value &got) {
    fail(path, "expected " + what + ", got " + describe(got));
  }

  /// Checks that `value` is an object whose keys are all in `allowed`.
  const Object *object(const Value &value, const std::string &path,
                       llvm::ArrayRef<llvm::StringRef> allowed) {
    if (failed())
      return nullptr;
    const Object *obj = value.getAsObject();
    if (!obj) {
      expected(path, "an object", value);
      return nullptr;
    }
    // Report unknown keys in a stable (sorted) order.
    std::vector<std::string> unknown;
    for (const auto &entry : *obj)
      if (!llvm::is_contained(allowed, llvm::StringRef(entry.first)))
        unknown.push_back(entry.first.str());
    if (!unknown.empty()) {
      std::sort(unknown.begin(), unknown.end());
      std::string known;
      for (llvm::StringRef key : allowed)
        known += (known.empty() ? "" : ", ") + key.str();
      fail(joinKey(path, unknown.front()),
           "unknown key (known keys: " + known + ")");
      return nullptr;
    }
    return obj;
  }

  const Value *field(const Object &obj, const std::string &path,
                     llvm::StringRef key, bool required) {
    if (failed())
      return nullptr;
    const Value *value = obj.get(key);
    if (!value && required)
      fail(joinKey(path, key), "missing required key");
    return value;
  }

  void readInt(const Object &obj, const std::string &path, llvm::StringRef key,
               int64_t &out, bool required, int64_t min,
               int64_t max = kMaxInt) {
    const Value *value = field(obj, path, key, required);
    if (value)
      out = checkInt(*value, joinKey(path, key), min, max);
  }

  int64_t checkInt(const Value &value, const std::string &path, int64_t min,
                   int64_t max = kMaxInt) {
    if (failed())
      return 0;
    // getAsUINT64 accepts only numbers written as integers (not 4.0);
    // a negative number is below every minimum we use, whatever its form.
    std::optional<uint64_t> asUnsigned = value.getAsUINT64();
    std::optional<double> asNumber = value.getAsNumber();
    bool negative = asNumber && *asNumber < 0;
    if (!asUnsigned && !negative) {
      expected(path, "an integer", value);
      return 0;
    }
    if (negative || int64_t(std::min<uint64_t>(*asUnsigned, INT64_MAX)) < min) {
      expected(path, llvm::formatv("an integer >= {0}", min), value);
      return 0;
    }
    if (*asUnsigned > uint64_t(max)) {
      expected(path, llvm::formatv("an integer <= {0}", max), value);
      return 0;
    }
    return int64_t(*asUnsigned);
  }

  /// Reads a float; `valid` says whether it is in range and `what` describes
  /// the range for the message ("a number > 0").
  void readFloat(const Object &obj, const std::string &path,
                 llvm::StringRef key, double &out, llvm::StringRef what,
                 std::function<bool(double)> valid) {
    const Value *value = field(obj, path, key, false);
    if (!value)
      return;
    std::string at = joinKey(path, key);
    std::optional<double> number = value->getAsNumber();
    if (!number) {
      expected(at, "a number", *value);
      return;
    }
    if (!std::isfinite(*number) || !valid(*number)) {
      expected(at, what, *value);
      return;
    }
    out = *number;
  }

  void readBool(const Object &obj, const std::string &path, llvm::StringRef key,
                bool &out) {
    const Value *value = field(obj, path, key, false);
    if (!value)
      return;
    if (std::optional<bool> flag = value->getAsBoolean())
      out = *flag;
    else
      expected(joinKey(path, key), "true or false", *value);
  }

  std::string checkString(const Value &value, const std::string &path) {
    if (failed())
      return {};
    std::optional<llvm::StringRef> text = value.getAsString();
    if (!text) {
      expected(path, "a string", value);
      return {};
    }
    return text->str();
  }

  /// A name that appears inside parameter names: [A-Za-z0-9_]+.
  std::string checkIdentifier(const Value &value, const std::string &path) {
    std::string text = checkString(value, path);
    if (failed())
      return {};
    bool ok = !text.empty() && llvm::all_of(text, [](char c) {
      return llvm::isAlnum(c) || c == '_';
    });
    if (!ok)
      expected(path, "a name matching [A-Za-z0-9_]+", value);
    return text;
  }

  const Array *list(const Value &value, const std::string &path,
                    bool nonEmpty) {
    if (failed())
      return nullptr;
    const Array *array = value.getAsArray();
    if (!array || (nonEmpty && array->empty())) {
      expected(path, nonEmpty ? "a non-empty list" : "a list", value);
      return nullptr;
    }
    return array;
  }

private:
  std::optional<std::string> error;
};

constexpr llvm::StringRef kTopKeys[] = {
    "name",        "vocab_size", "modalities", "d_model", "n_layers",
    "n_heads",     "ffn_hidden", "seq_len",    "norm",    "norm_eps",
    "qk_norm",     "rope_theta", "z_loss",     "moe",     "mod",
    "aux_routers", "train"};
constexpr llvm::StringRef kModalityKeys[] = {"name", "token_ranges"};
constexpr llvm::StringRef kMoeKeys[] = {"every", "groups", "capacity_factor",
                                        "gumbel"};
constexpr llvm::StringRef kGroupKeys[] = {"name", "modalities", "experts"};
constexpr llvm::StringRef kModKeys[] = {"every", "offset", "capacity"};
constexpr llvm::StringRef kTrainKeys[] = {
    "batch_size",   "micro_batches", "total_steps", "lr",  "min_lr",
    "warmup_steps", "beta1",         "beta2",       "eps", "weight_decay",
    "grad_clip",    "precision",     "seed"};

// Finite too: a JSON number such as 1e999 reads as infinity.
bool positive(double x) { return std::isfinite(x) && x > 0; }
bool nonNegative(double x) { return std::isfinite(x) && x >= 0; }
bool unitInterval(double x) { return x >= 0 && x < 1; }

void readModalities(DescriptionReader &reader, const Object &top,
                    ModelConfig &config) {
  const Value *value = reader.field(top, "", "modalities", false);
  if (!value) {
    if (reader.failed())
      return;
    if (config.vocabSize < kDefaultImageRange.hi) {
      reader.fail("modalities",
                  llvm::formatv("missing: the default layout (image owns [{0}, "
                                "{1})) needs vocab_size >= {1}, got {2}; list "
                                "the modalities",
                                kDefaultImageRange.lo, kDefaultImageRange.hi,
                                config.vocabSize));
      return;
    }
    config.modalities = {Modality{"text", {}, {}},
                         Modality{"image", {kDefaultImageRange}, {}}};
  } else {
    const Array *array = reader.list(*value, "modalities", /*nonEmpty=*/true);
    if (!array)
      return;
    std::map<std::string, size_t> seen;
    for (size_t i = 0; i < array->size() && !reader.failed(); ++i) {
      std::string path = joinIndex("modalities", i);
      const Object *obj = reader.object((*array)[i], path, kModalityKeys);
      if (!obj)
        return;
      Modality modality;
      if (const Value *name = reader.field(*obj, path, "name", true))
        modality.name = reader.checkIdentifier(*name, joinKey(path, "name"));
      if (reader.failed())
        return;
      auto [it, inserted] = seen.emplace(modality.name, i);
      if (!inserted) {
        reader.fail(joinKey(path, "name"),
                    llvm::formatv("expected a unique name, got \"{0}\" (also "
                                  "modalities[{1}].name)",
                                  modality.name, it->second));
        return;
      }
      if (const Value *ranges =
              reader.field(*obj, path, "token_ranges", false)) {
        std::string rangesPath = joinKey(path, "token_ranges");
        const Array *rangeList = reader.list(*ranges, rangesPath, false);
        for (size_t r = 0; rangeList && r < rangeList->size(); ++r) {
          std::string rangePath = joinIndex(rangesPath, r);
          const Array *pair = (*rangeList)[r].getAsArray();
          if (!pair || pair->size() != 2) {
            reader.expected(rangePath, "a range [lo, hi]", (*rangeList)[r]);
            return;
          }
          int64_t lo = reader.checkInt((*pair)[0], joinIndex(rangePath, 0), 0);
          int64_t hi = reader.checkInt((*pair)[1], joinIndex(rangePath, 1), 0);
          if (reader.failed())
            return;
          if (!(lo < hi && hi <= config.vocabSize)) {
            reader.fail(rangePath,
                        llvm::formatv("expected [lo, hi) with 0 <= lo < hi <= "
                                      "vocab_size ({0}), got [{1}, {2}]",
                                      config.vocabSize, lo, hi));
            return;
          }
          modality.declaredRanges.push_back({lo, hi});
        }
        // An empty list declares no ranges: the default modality, as if
        // the key were omitted (MODEL_SPEC section 1).
        if (reader.failed())
          return;
      }
      config.modalities.push_back(std::move(modality));
    }
  }
  if (reader.failed())
    return;

  // Overlaps, the default modality and coverage.
  struct Owned {
    TokenRange range;
    std::string path;
  };
  std::vector<Owned> owned;
  int defaultModality = -1;
  for (size_t m = 0; m < config.modalities.size(); ++m) {
    const Modality &modality = config.modalities[m];
    std::string path = joinIndex("modalities", m);
    if (modality.isDefault()) {
      if (defaultModality >= 0) {
        reader.fail(joinKey(path, "token_ranges"),
                    llvm::formatv("missing: only one modality may omit its "
                                  "ranges (or list none), and modalities[{0}] "
                                  "(\"{1}\") already owns every unlisted id",
                                  defaultModality,
                                  config.modalities[defaultModality].name));
        return;
      }
      defaultModality = int(m);
    }
    for (size_t r = 0; r < modality.declaredRanges.size(); ++r)
      owned.push_back({modality.declaredRanges[r],
                       joinIndex(joinKey(path, "token_ranges"), r)});
  }
  std::stable_sort(
      owned.begin(), owned.end(),
      [](const Owned &a, const Owned &b) { return a.range.lo < b.range.lo; });
  for (size_t i = 1; i < owned.size(); ++i) {
    if (owned[i].range.lo < owned[i - 1].range.hi) {
      // Name the one written later in the file as the offender.
      const Owned &first =
          owned[i - 1].path < owned[i].path ? owned[i - 1] : owned[i];
      const Owned &second = &first == &owned[i] ? owned[i - 1] : owned[i];
      reader.fail(
          second.path,
          llvm::formatv("expected token ranges that do not overlap, "
                        "got [{0}, {1}), which overlaps {2} ([{3}, {4}))",
                        second.range.lo, second.range.hi, first.path,
                        first.range.lo, first.range.hi));
      return;
    }
  }
  std::vector<TokenRange> gaps;
  int64_t cursor = 0;
  for (const Owned &o : owned) {
    if (o.range.lo > cursor)
      gaps.push_back({cursor, o.range.lo});
    cursor = o.range.hi;
  }
  if (cursor < config.vocabSize)
    gaps.push_back({cursor, config.vocabSize});

  for (Modality &modality : config.modalities) {
    modality.ranges = modality.declaredRanges;
    std::sort(modality.ranges.begin(), modality.ranges.end(),
              [](TokenRange a, TokenRange b) { return a.lo < b.lo; });
  }
  if (defaultModality >= 0) {
    if (gaps.empty()) {
      reader.fail(joinIndex("modalities", defaultModality),
                  llvm::formatv("expected the default modality \"{0}\" to own "
                                "some ids, but the other modalities' ranges "
                                "cover [0, {1})",
                                config.modalities[defaultModality].name,
                                config.vocabSize));
      return;
    }
    config.modalities[defaultModality].ranges = gaps;
  } else if (!gaps.empty()) {
    reader.fail(
        "modalities",
        llvm::formatv("expected the token ranges to cover [0, "
                      "vocab_size) when no modality is the default, but "
                      "{0} belongs to no modality",
                      describeRanges(gaps)));
  }
}

void readMoe(DescriptionReader &reader, const Value &value,
             ModelConfig &config) {
  const Object *obj = reader.object(value, "moe", kMoeKeys);
  if (!obj)
    return;
  MoeConfig moe;
  reader.readInt(*obj, "moe", "every", moe.every, false, 1);
  reader.readFloat(*obj, "moe", "capacity_factor", moe.capacityFactor,
                   "a number > 0", positive);
  reader.readBool(*obj, "moe", "gumbel", moe.gumbel);
  const Value *groups = reader.field(*obj, "moe", "groups", true);
  if (!groups)
    return;
  const Array *array = reader.list(*groups, "moe.groups", /*nonEmpty=*/true);
  if (!array)
    return;

  std::map<std::string, size_t> groupNames;
  std::vector<int> groupOfModality(config.modalities.size(), -1);
  for (size_t g = 0; g < array->size(); ++g) {
    std::string path = joinIndex("moe.groups", g);
    const Object *groupObj = reader.object((*array)[g], path, kGroupKeys);
    if (!groupObj)
      return;
    ExpertGroup group;
    if (const Value *name = reader.field(*groupObj, path, "name", true))
      group.name = reader.checkIdentifier(*name, joinKey(path, "name"));
    if (reader.failed())
      return;
    if (auto [it, inserted] = groupNames.emplace(group.name, g); !inserted) {
      reader.fail(joinKey(path, "name"),
                  llvm::formatv("expected a unique name, got \"{0}\" (also "
                                "moe.groups[{1}].name)",
                                group.name, it->second));
      return;
    }
    const Value *members = reader.field(*groupObj, path, "modalities", true);
    if (!members)
      return;
    std::string membersPath = joinKey(path, "modalities");
    const Array *memberList = reader.list(*members, membersPath, true);
    if (!memberList)
      return;
    for (size_t i = 0; i < memberList->size(); ++i) {
      std::string memberPath = joinIndex(membersPath, i);
      std::string member = reader.checkString((*memberList)[i], memberPath);
      if (reader.failed())
        return;
      auto found = llvm::find_if(config.modalities, [&](const Modality &m) {
        return m.name == member;
      });
      if (found == config.modalities.end()) {
        std::string known;
        for (const Modality &m : config.modalities)
          known += (known.empty() ? "" : ", ") + m.name;
        reader.fail(memberPath,
                    llvm::formatv("expected the name of a modality ({0}), got "
                                  "\"{1}\"",
                                  known, member));
        return;
      }
      unsigned index = unsigned(found - config.modalities.begin());
      if (groupOfModality[index] >= 0) {
        reader.fail(
            memberPath,
            llvm::formatv("modality \"{0}\" is already in group \"{1}\" "
                          "(each modality belongs to exactly one group)",
                          member,
                          moe.groups.size() > size_t(groupOfModality[index])
                              ? moe.groups[groupOfModality[index]].name
                              : group.name));
        return;
      }
      groupOfModality[index] = int(g);
      group.modalities.push_back(member);
      group.modalityIndices.push_back(index);
    }
    reader.readInt(*groupObj, path, "experts", group.experts, true, 1);
    if (reader.failed())
      return;
    moe.groups.push_back(std::move(group));
  }
  for (size_t m = 0; m < groupOfModality.size(); ++m) {
    if (groupOfModality[m] < 0) {
      reader.fail("moe.groups",
                  llvm::formatv("expected every modality in exactly one group, "
                                "but modality \"{0}\" is in none",
                                config.modalities[m].name));
      return;
    }
  }
  config.moe = std::move(moe);
}

void readMod(DescriptionReader &reader, const Value &value,
             ModelConfig &config) {
  const Object *obj = reader.object(value, "mod", kModKeys);
  if (!obj)
    return;
  ModConfig mod;
  reader.readInt(*obj, "mod", "every", mod.every, false, 1);
  reader.readInt(*obj, "mod", "offset", mod.offset, false, 0);
  reader.readFloat(*obj, "mod", "capacity", mod.capacity, "a number in (0, 1]",
                   [](double x) { return x > 0 && x <= 1; });
  if (reader.failed())
    return;
  if (mod.offset >= mod.every) {
    reader.fail(
        "mod.offset",
        llvm::formatv("expected an integer in [0, mod.every) = [0, {0}), "
                      "got {1}",
                      mod.every, mod.offset));
    return;
  }
  config.mod = mod;
}

void readTrain(DescriptionReader &reader, const Value &value,
               ModelConfig &config) {
  const Object *obj = reader.object(value, "train", kTrainKeys);
  if (!obj)
    return;
  TrainConfig &train = config.train;
  reader.readInt(*obj, "train", "batch_size", train.batchSize, false, 1);
  reader.readInt(*obj, "train", "micro_batches", train.microBatches, false, 1);
  reader.readInt(*obj, "train", "total_steps", train.totalSteps, false, 1);
  reader.readFloat(*obj, "train", "lr", train.lr, "a number > 0", positive);
  reader.readFloat(*obj, "train", "min_lr", train.minLr, "a number >= 0",
                   nonNegative);
  reader.readInt(*obj, "train", "warmup_steps", train.warmupSteps, false, 0);
  reader.readFloat(*obj, "train", "beta1", train.beta1, "a number in [0, 1)",
                   unitInterval);
  reader.readFloat(*obj, "train", "beta2", train.beta2, "a number in [0, 1)",
                   unitInterval);
  reader.readFloat(*obj, "train", "eps", train.eps, "a number > 0", positive);
  reader.readFloat(*obj, "train", "weight_decay", train.weightDecay,
                   "a number >= 0", nonNegative);
  reader.readFloat(*obj, "train", "grad_clip", train.gradClip,
                   "a number >= 0 (0 disables clipping)", nonNegative);
  // The schedule decays from lr to min_lr (MODEL_SPEC section 7).
  if (!reader.failed() && train.minLr > train.lr)
    reader.fail("train.min_lr",
                llvm::formatv("expected a number <= train.lr ({0}), got {1}",
                              llvm::json::Value(train.lr),
                              llvm::json::Value(train.minLr)));
  reader.readInt(*obj, "train", "seed", train.seed, false, 0);
  if (const Value *precision =
          reader.field(*obj, "train", "precision", false)) {
    std::optional<llvm::StringRef> text = precision->getAsString();
    if (text == "fp32")
      train.precision = Precision::FP32;
    else if (text == "bf16")
      train.precision = Precision::BF16;
    else
      reader.expected("train.precision", "\"fp32\" or \"bf16\"", *precision);
  }
}

/// Sizes that are each in range can still overflow together: token indices
/// are i32 in the IR, and element counts are int64 everywhere.
void checkSizes(DescriptionReader &reader, const ModelConfig &config) {
  const int64_t tokens = config.train.batchSize * config.seqLen;
  if (tokens > kMaxInt) {
    reader.fail("train.batch_size",
                llvm::formatv("expected batch_size * seq_len <= {0} (token "
                              "indices are 32-bit), got {1} * {2}",
                              kMaxInt, config.train.batchSize, config.seqLen));
    return;
  }
  // Estimated in double, so that the estimate itself cannot overflow.
  const double d = double(config.dModel), f = double(config.ffnHidden);
  double experts = 1;
  if (config.moe) {
    experts = 0;
    for (const ExpertGroup &group : config.moe->groups)
      experts += double(group.experts);
  }
  double perLayer = 4 * d * d + 3 * d * f * experts + (experts + 8) * d;
  double total =
      2 * double(config.vocabSize) * d + double(config.nLayers) * perLayer;
  constexpr double kMaxParameters = 1e15;
  if (total > kMaxParameters)
    reader.fail("", llvm::formatv("expected at most {0} parameters, got {1}",
                                  llvm::format("%.2g", kMaxParameters),
                                  llvm::format("%.2g", total)));
}

} // namespace

int ModelConfig::modalityOf(int64_t tokenId) const {
  for (size_t m = 0; m < modalities.size(); ++m)
    for (const TokenRange &range : modalities[m].ranges)
      if (range.contains(tokenId))
        return int(m);
  return -1;
}

std::vector<uint64_t>
ModelConfig::countTargetsByModality(llvm::ArrayRef<int32_t> batch) const {
  std::vector<uint64_t> counts(modalities.size(), 0);
  const size_t row = size_t(seqLen + 1);
  for (size_t start = 0; start + row <= batch.size(); start += row)
    for (size_t s = 1; s < row; ++s)
      ++counts[modalityOf(batch[start + s])];
  return counts;
}

unsigned ModelConfig::groupOfModality(unsigned modality) const {
  for (size_t g = 0; g < moe->groups.size(); ++g)
    if (llvm::is_contained(moe->groups[g].modalityIndices, modality))
      return unsigned(g);
  return 0;
}

std::vector<TokenRange>
ModelConfig::groupRanges(const ExpertGroup &group) const {
  std::vector<TokenRange> ranges;
  for (unsigned m : group.modalityIndices)
    llvm::append_range(ranges, modalities[m].ranges);
  std::sort(ranges.begin(), ranges.end(),
            [](TokenRange a, TokenRange b) { return a.lo < b.lo; });
  // Adjacent ranges of different modalities read better as one.
  std::vector<TokenRange> merged;
  for (const TokenRange &range : ranges) {
    if (!merged.empty() && merged.back().hi == range.lo)
      merged.back().hi = range.hi;
    else
      merged.push_back(range);
  }
  return merged;
}

llvm::Expected<ModelConfig> momac::parseModelConfig(llvm::StringRef jsonText) {
  llvm::Expected<Value> parsed = parseJson(jsonText);
  if (!parsed)
    return parsed.takeError();

  DescriptionReader reader;
  ModelConfig config;
  const Object *top = reader.object(*parsed, "", kTopKeys);
  if (!top)
    return reader.takeError();

  if (const Value *name = reader.field(*top, "", "name", true)) {
    config.name = reader.checkString(*name, "name");
    if (!reader.failed() && config.name.empty())
      reader.expected("name", "a non-empty string", *name);
  }
  reader.readInt(*top, "", "vocab_size", config.vocabSize, false, 2);
  reader.readInt(*top, "", "d_model", config.dModel, true, 1);
  reader.readInt(*top, "", "n_layers", config.nLayers, true, 1, kMaxLayers);
  reader.readInt(*top, "", "n_heads", config.nHeads, true, 1);
  reader.readInt(*top, "", "ffn_hidden", config.ffnHidden, true, 1);
  reader.readInt(*top, "", "seq_len", config.seqLen, true, 1);
  if (const Value *norm = reader.field(*top, "", "norm", false)) {
    std::optional<llvm::StringRef> text = norm->getAsString();
    if (text == "swin")
      config.norm = NormOrder::Swin;
    else if (text == "pre")
      config.norm = NormOrder::Pre;
    else
      reader.expected("norm", "\"swin\" or \"pre\"", *norm);
  }
  reader.readFloat(*top, "", "norm_eps", config.normEps, "a number > 0",
                   positive);
  reader.readBool(*top, "", "qk_norm", config.qkNorm);
  reader.readFloat(*top, "", "rope_theta", config.ropeTheta, "a number > 0",
                   positive);
  reader.readFloat(*top, "", "z_loss", config.zLoss, "a number >= 0",
                   nonNegative);
  reader.readBool(*top, "", "aux_routers", config.auxRouters);
  if (reader.failed())
    return reader.takeError();

  // Cross-field checks on the backbone.
  if (config.dModel % config.nHeads != 0)
    reader.fail("n_heads", llvm::formatv("expected a divisor of d_model ({0}), "
                                         "got {1}",
                                         config.dModel, config.nHeads));
  else if (config.headDim() % 2 != 0)
    reader.fail("n_heads",
                llvm::formatv("expected an even head_dim = d_model / n_heads "
                              "(RoPE rotates pairs), got {0} / {1} = {2}",
                              config.dModel, config.nHeads, config.headDim()));
  // An even head_dim makes d_model even too, as the auxiliary routers'
  // hidden size d_model / 2 requires (MODEL_SPEC section 1).
  if (reader.failed())
    return reader.takeError();

  readModalities(reader, *top, config);
  if (const Value *moe = reader.field(*top, "", "moe", false))
    readMoe(reader, *moe, config);
  if (const Value *mod = reader.field(*top, "", "mod", false))
    readMod(reader, *mod, config);
  if (const Value *train = reader.field(*top, "", "train", false))
    readTrain(reader, *train, config);
  if (reader.failed())
    return reader.takeError();
  checkSizes(reader, config);
  if (reader.failed())
    return reader.takeError();
  return config;
}

llvm::Expected<ModelConfig> momac::loadModelConfig(llvm::StringRef path) {
  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> buffer =
      llvm::MemoryBuffer::getFileOrSTDIN(path, /*IsText=*/true);
  if (!buffer)
    return llvm::createStringError(buffer.getError(),
                                   "cannot read the model description: " +
                                       buffer.getError().message());
  return parseModelConfig((*buffer)->getBuffer());
}
