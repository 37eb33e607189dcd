//===- Upcycle.cpp - Sparse upcycling of a checkpoint ---------------------===//

#include "runtime/model/Upcycle.h"

#include "lib/config/Parameters.h"
#include "lib/safetensors/Safetensors.h"

#include "llvm/ADT/StringSet.h"
#include "llvm/Support/FormatVariadic.h"

using namespace momac;

namespace {

llvm::Error upcycleError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 message.str());
}

/// "layers.3.moe.image.w1" -> {"layers.3.", "w1"}: a stacked expert
/// matrix of a modality group.
std::optional<std::pair<llvm::StringRef, llvm::StringRef>>
splitExpertMatrix(llvm::StringRef name) {
  size_t moe = name.find(".moe.");
  if (moe == llvm::StringRef::npos)
    return std::nullopt;
  llvm::StringRef matrix = name.rsplit('.').second;
  if (matrix != "w1" && matrix != "w2" && matrix != "w3")
    return std::nullopt;
  return std::make_pair(name.take_front(moe + 1), matrix);
}

bool isExpertRouter(llvm::StringRef name) {
  return name.contains(".moe.") && name.ends_with(".router.weight") &&
         !isAuxRouterParameter(name);
}

/// `values` (one expert's [...] matrix) repeated `experts` times.
std::vector<float> repeat(const std::vector<float> &values, int64_t experts) {
  std::vector<float> stacked;
  stacked.reserve(values.size() * experts);
  for (int64_t e = 0; e < experts; ++e)
    stacked.insert(stacked.end(), values.begin(), values.end());
  return stacked;
}

} // namespace

llvm::Expected<Weights> momac::upcycle(const Manifest &target,
                                       const SafetensorsFile &source,
                                       uint64_t seed,
                                       UpcycleSummary *summary) {
  UpcycleSummary local;
  UpcycleSummary &made = summary ? *summary : local;
  Weights weights = Weights::initialize(target, seed);
  llvm::StringSet<> used;
  llvm::StringRef path = source.path();

  // Reads source tensor `name`, which must have `shape`.
  auto read = [&](llvm::StringRef name, llvm::ArrayRef<int64_t> shape,
                  llvm::StringRef forTarget)
      -> llvm::Expected<std::vector<float>> {
    const TensorInfo *tensor = source.find(name);
    if (llvm::ArrayRef<int64_t>(tensor->shape) != shape)
      return upcycleError(llvm::formatv(
          "{0}: '{1}' has shape {2}, but the target's '{3}' needs {4}: the "
          "two models' shapes do not correspond",
          path, name, formatShape(tensor->shape), forTarget,
          formatShape(shape)));
    used.insert(name);
    return source.readFloats(name);
  };

  for (size_t i = 0; i < weights.size(); ++i) {
    const ManifestParameter &param = weights.spec(i);
    llvm::StringRef name = param.name;
    const std::vector<int64_t> &shape = param.shape;
    auto expert = splitExpertMatrix(name);
    std::vector<int64_t> oneExpert =
        expert ? std::vector<int64_t>(shape.begin() + 1, shape.end())
               : std::vector<int64_t>{};

    if (const TensorInfo *tensor = source.find(name)) {
      // An expert group with fewer experts: its one FFN into every expert.
      if (expert && tensor->shape != shape && !tensor->shape.empty() &&
          tensor->shape[0] == 1) {
        std::vector<int64_t> single = oneExpert;
        single.insert(single.begin(), 1);
        auto values = read(name, single, name);
        if (!values)
          return values.takeError();
        weights[i] = repeat(*values, shape[0]);
        made.replicated.push_back(name.str());
        continue;
      }
      auto values = read(name, shape, name);
      if (!values)
        return values.takeError();
      weights[i] = std::move(*values);
      made.copied.push_back(name.str());
      continue;
    }
    if (expert) {
      // A dense source: the layer's FFN into every expert of every group.
      std::string dense =
          (expert->first + "feed_forward." + expert->second + ".weight").str();
      if (source.find(dense)) {
        auto values = read(dense, oneExpert, name);
        if (!values)
          return values.takeError();
        weights[i] = repeat(*values, shape[0]);
        made.replicated.push_back(name.str());
        continue;
      }
      return upcycleError(llvm::formatv(
          "{0}: has neither '{1}' nor '{2}' to start the target's experts "
          "from: the two models' layers do not correspond",
          path, name, dense));
    }
    if (isExpertRouter(name) || isAuxRouterParameter(name)) {
      made.fresh.push_back(name.str()); // already drawn by initialize()
      continue;
    }
    return upcycleError(llvm::formatv(
        "{0}: lacks '{1}' (shape {2}), which the target model has and "
        "upcycling does not create: the two models do not correspond",
        path, name, formatShape(shape)));
  }

  // A source tensor left over (a layer or group the target lacks) would be
  // silently dropped training: refuse.
  for (llvm::StringRef name : source.names())
    if (!used.contains(name) && !name.starts_with("optim.") &&
        !isExpertRouter(name) && !isAuxRouterParameter(name))
      return upcycleError(llvm::formatv(
          "{0}: '{1}' has no counterpart in the target model: the two "
          "models' layers or groups do not correspond",
          path, name));
  return weights;
}
