//===- Weights.cpp - A model's parameters in memory -----------------------===//

#include "runtime/model/Weights.h"

#include "lib/safetensors/Safetensors.h"
#include "runtime/artifact/LoadedArtifact.h"

#include "llvm/ADT/StringSet.h"
#include "llvm/Support/FormatVariadic.h"

#include <random>

using namespace momac;

void Weights::initializeEach(
    const Manifest &manifest, uint64_t seed,
    llvm::function_ref<void(size_t, std::vector<float> &)> take) {
  std::mt19937_64 generator(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  for (auto [i, param] : llvm::enumerate(manifest.parameters)) {
    std::vector<float> values(param.numElements());
    if (param.init == "ones")
      std::fill(values.begin(), values.end(), 1.0f);
    else if (param.init == "zeros")
      std::fill(values.begin(), values.end(), 0.0f);
    else
      for (float &v : values)
        v = normal(generator);
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
      if (llvm::Error error = artifact.keepOnDevice(
              values[i].data(), values[i].size() * sizeof(float),
              params[i].name))
        return error;
  return llvm::Error::success();
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
