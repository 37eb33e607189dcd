//===- Weights.cpp - A model's parameters in memory -----------------------===//

#include "runtime/model/Weights.h"

#include "lib/safetensors/Safetensors.h"
#include "runtime/artifact/LoadedArtifact.h"

#include "llvm/ADT/StringSet.h"
#include "llvm/Support/FormatVariadic.h"

#include <algorithm>
#include <cmath>
#include <atomic>
#include <random>
#include <thread>

using namespace momac;

namespace {

/// SplitMix64's finalizer: decorrelates the chunk seeds.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/// Fills `values` (parameter `index`) with N(0, 0.02), chunk by chunk on
/// every core.
void drawNormal(std::vector<float> &values, uint64_t seed, uint64_t index) {
  const size_t chunks =
      (values.size() + Weights::kInitChunk - 1) / Weights::kInitChunk;
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t c = next++; c < chunks; c = next++) {
      std::mt19937_64 generator(mix(mix(seed) ^ mix(index << 32 | c)));
      std::normal_distribution<float> normal(0.0f, 0.02f);
      size_t end = std::min(values.size(), (c + 1) * Weights::kInitChunk);
      for (size_t i = c * Weights::kInitChunk; i < end; ++i)
        values[i] = normal(generator);
    }
  };
  size_t threads = std::min<size_t>(
      chunks, std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> workers;
  for (size_t t = 1; t < threads; ++t)
    workers.emplace_back(work);
  work();
  for (std::thread &worker : workers)
    worker.join();
}

} // namespace

void Weights::initializeEach(
    const Manifest &manifest, uint64_t seed,
    llvm::function_ref<void(size_t, std::vector<float> &)> take) {
  for (auto [i, param] : llvm::enumerate(manifest.parameters)) {
    std::vector<float> values(param.numElements());
    if (param.init == "ones")
      std::fill(values.begin(), values.end(), 1.0f);
    else if (param.init == "zeros")
      std::fill(values.begin(), values.end(), 0.0f);
    else
      drawNormal(values, seed, i);
    take(i, values);
  }
}

Weights Weights::initialize(const Manifest &manifest, uint64_t seed) {
  Weights weights;
  weights.params = manifest.parameters;
  initializeEach(manifest, seed, [&](size_t, std::vector<float> &values) {
    weights.values.push_back(std::move(values));
  });
  return weights;
}

llvm::Error Weights::loadEach(
    const Manifest &manifest, llvm::StringRef path,
    llvm::function_ref<void(size_t, std::vector<float> &)> take) {
  llvm::Expected<SafetensorsFile> file = SafetensorsFile::open(path);
  if (!file)
    return file.takeError();
  llvm::StringSet<> expected;
  for (const ManifestParameter &param : manifest.parameters) {
    expected.insert(param.name);
    const TensorInfo *tensor = file->find(param.name);
    if (!tensor)
      return llvm::createStringError(
          llvm::inconvertibleErrorCode(),
          llvm::formatv("{0}: missing parameter '{1}'", path, param.name));
    if (tensor->shape != param.shape)
      return llvm::createStringError(
          llvm::inconvertibleErrorCode(),
          llvm::formatv("{0}: parameter '{1}' has shape {2}, expected {3}",
                        path, param.name, formatShape(tensor->shape),
                        formatShape(param.shape)));
  }
  // A checkpoint is a weights file too: its optimizer moments are skipped.
  for (llvm::StringRef name : file->names())
    if (!expected.contains(name) && !name.starts_with("optim."))
      return llvm::createStringError(
          llvm::inconvertibleErrorCode(),
          llvm::formatv("{0}: '{1}' is not a parameter of this model", path,
                        name));
  for (auto [i, param] : llvm::enumerate(manifest.parameters)) {
    llvm::Expected<std::vector<float>> values = file->readFloats(param.name);
    if (!values)
      return values.takeError();
    take(i, *values);
  }
  return llvm::Error::success();
}

llvm::Expected<Weights> Weights::load(const Manifest &manifest,
                                      llvm::StringRef path) {
  Weights weights;
  weights.params = manifest.parameters;
  if (llvm::Error error =
          loadEach(manifest, path, [&](size_t, std::vector<float> &values) {
            weights.values.push_back(std::move(values));
          }))
    return std::move(error);
  return weights;
}

llvm::Error Weights::keepOnDevice(
    const LoadedArtifact &artifact,
    llvm::function_ref<bool(const ManifestParameter &)> keep) {
  for (size_t i = 0; i < values.size(); ++i)
    if (keep(params[i]) && !values[i].empty())
      if (llvm::Error error = artifact.device().keep(
              values[i].data(), values[i].size() * sizeof(float),
              params[i].name))
        return error;
  return llvm::Error::success();
}

llvm::Error Weights::checkFinite(llvm::StringRef from) const {
  for (size_t i = 0; i < values.size(); ++i) {
    auto bad = std::find_if(values[i].begin(), values[i].end(),
                            [](float x) { return !std::isfinite(x); });
    if (bad != values[i].end())
      return llvm::createStringError(
          llvm::inconvertibleErrorCode(),
          llvm::formatv("{0}: {1} holds {2} (element {3}): the weights of a "
                        "diverged run; resume from an earlier checkpoint",
                        from, params[i].name,
                        std::isnan(*bad) ? "NaN" : *bad > 0 ? "+Inf" : "-Inf",
                        bad - values[i].begin())
              .str());
  }
  return llvm::Error::success();
}

llvm::StringMap<void *> Weights::byName() {
  llvm::StringMap<void *> buffers;
  for (size_t i = 0; i < values.size(); ++i)
    buffers[params[i].name] = values[i].data();
  return buffers;
}

llvm::Error
Weights::save(llvm::StringRef path,
              const std::map<std::string, std::string> &metadata) const {
  SafetensorsWriter writer;
  for (size_t i = 0; i < values.size(); ++i) {
    llvm::ArrayRef<char> bytes(reinterpret_cast<const char *>(values[i].data()),
                               values[i].size() * sizeof(float));
    if (llvm::Error error = writer.addBorrowed(params[i].name, DType::F32,
                                               params[i].shape, bytes))
      return error;
  }
  for (const auto &[key, value] : metadata)
    writer.setMetadata(key, value);
  return writer.write(path);
}
