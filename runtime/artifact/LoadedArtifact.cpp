//===- LoadedArtifact.cpp - A compiled artifact, ready to call ------------===//

#include "runtime/artifact/LoadedArtifact.h"

#include <unistd.h>

#include "lib/config/Parameters.h"

#include "llvm/Support/DynamicLibrary.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"

#include <cmath>
#include <cstdlib>

using namespace momac;

static llvm::Error artifactError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message.str());
}

llvm::Expected<LoadedArtifact> LoadedArtifact::open(llvm::StringRef directory) {
  LoadedArtifact artifact;
  artifact.dir = directory.str();
  if (!llvm::sys::fs::is_directory(directory))
    return artifactError(directory + ": not an artifact directory (compile "
                                     "one with `momac MODEL.json -o DIR`)");
  llvm::SmallString<256> manifestPath(directory);
  llvm::sys::path::append(manifestPath, "manifest.json");
  llvm::Expected<Manifest> manifest = readManifest(manifestPath);
  if (!manifest)
    return manifest.takeError();
  artifact.manifestData = std::move(*manifest);

  llvm::SmallString<256> descriptionPath(directory);
  llvm::sys::path::append(descriptionPath, artifact.manifestData.description);
  llvm::Expected<ModelConfig> config = loadModelConfig(descriptionPath);
  if (!config)
    return artifactError(descriptionPath + ": " +
                         llvm::toString(config.takeError()));
  artifact.configData = std::move(*config);

  // Every field both files carry must agree: a manifest edited or copied
  // from another model would bind buffers of the wrong sizes.
  const Manifest &m = artifact.manifestData;
  const ModelConfig &c = artifact.configData;
  auto disagree = [&](llvm::StringRef field, const llvm::Twine &listed,
                      const llvm::Twine &described) {
    return artifactError(manifestPath + ": " + field + " is " + listed +
                         ", but its model description (" +
                         m.description + ") says " + described);
  };
  if (m.model != c.name)
    return disagree("model", "'" + m.model + "'", "'" + c.name + "'");
  if (m.batchSize != c.train.batchSize)
    return disagree("batch_size", llvm::Twine(m.batchSize),
                    llvm::Twine(c.train.batchSize));
  if (m.seqLen != c.seqLen)
    return disagree("seq_len", llvm::Twine(m.seqLen), llvm::Twine(c.seqLen));
  if (m.vocabSize != c.vocabSize)
    return disagree("vocab_size", llvm::Twine(m.vocabSize),
                    llvm::Twine(c.vocabSize));

  // The description and the manifest must name the same parameters.
  std::vector<ParameterSpec> expected = listParameters(artifact.configData);
  const auto &listed = artifact.manifestData.parameters;
  if (expected.size() != listed.size())
    return artifactError(llvm::formatv("{0}: lists {1} parameters, but its "
                                       "model description has {2}",
                                       manifestPath, listed.size(),
                                       expected.size()));
  for (size_t i = 0; i < listed.size(); ++i)
    if (expected[i].name != listed[i].name ||
        expected[i].shape != listed[i].shape ||
        expected[i].weightDecay != listed[i].weightDecay ||
        expected[i].auxRouter != listed[i].auxRouter)
      return artifactError(manifestPath + ": parameter " + listed[i].name +
                           " does not match the model description");

  llvm::SmallString<256> libraryPath(directory);
  llvm::sys::path::append(libraryPath, artifact.manifestData.library);
  // A truncated or replaced library would crash the process while loading
  // (SIGBUS) or run other code: check it against the manifest first.
  if (m.librarySize) {
    llvm::Expected<std::pair<int64_t, std::string>> fingerprint =
        fingerprintFile(libraryPath);
    if (!fingerprint)
      return fingerprint.takeError();
    if (fingerprint->first != *m.librarySize)
      return artifactError(llvm::formatv(
          "{0}: {1} bytes, but the manifest records {2}: truncated or "
          "replaced; recompile the artifact with momac",
          libraryPath, fingerprint->first, *m.librarySize));
    if (fingerprint->second != m.libraryHash)
      return artifactError(libraryPath + ": its XXH3 hash " +
                           fingerprint->second + " is not the manifest's " +
                           m.libraryHash +
                           ": modified or replaced; recompile the artifact "
                           "with momac");
  }
  // What the libraries model.so links read when they load (thread settings).
  prepareHostBeforeLoad();
  std::string error;
  llvm::sys::DynamicLibrary library =
      llvm::sys::DynamicLibrary::getPermanentLibrary(libraryPath.c_str(),
                                                     &error);
  if (!library.isValid())
    return artifactError(libraryPath + ": cannot load: " + error);
  artifact.libraryPath = libraryPath.str().str();
  // A CUDA artifact carries its runtime; it says here whether this
  // machine's GPU (and driver) can run it. Without one, what needs no
  // entry point (init, upcycle) still works; entryPoint() says why not.
  llvm::Expected<std::unique_ptr<Device>> device =
      openDevice(library, libraryPath.str());
  if (device) {
    artifact.deviceData = std::move(*device);
  } else {
    artifact.deviceUnavailable = llvm::toString(device.takeError());
    artifact.deviceData = cpu::openHostDevice(library);
  }
  return artifact;
}

llvm::Expected<std::pair<const EntryPointSpec *, LoadedArtifact::EntryFunction>>
LoadedArtifact::entryPoint(llvm::StringRef name) const {
  const EntryPointSpec *spec = manifestData.findEntryPoint(name);
  if (!spec)
    return artifactError(dir + ": the artifact has no entry point '" + name +
                         "'");
  if (!deviceUnavailable.empty())
    return artifactError(deviceUnavailable);
  std::string error;
  auto library = llvm::sys::DynamicLibrary::getPermanentLibrary(
      libraryPath.c_str(), &error);
  void *address = library.getAddressOfSymbol(spec->symbol.c_str());
  if (!address)
    return artifactError(libraryPath + ": no symbol " + spec->symbol);
  EntryFunction function;
  function.function = reinterpret_cast<void (*)(void **)>(address);
  function.spec = spec;
  function.device = deviceData.get();
  return std::make_pair(spec, function);
}

void *LoadedArtifact::symbol(llvm::StringRef name) const {
  std::string error;
  auto library = llvm::sys::DynamicLibrary::getPermanentLibrary(
      libraryPath.c_str(), &error);
  return library.getAddressOfSymbol(name.str().c_str());
}

llvm::Error EntryFunction::operator()(void **buffers) const {
  return device->call(function, *spec, buffers);
}

llvm::Expected<std::vector<void *>>
momac::bindByName(const EntryPointSpec &entry,
                  const llvm::StringMap<void *> &arguments,
                  const llvm::StringMap<void *> &results) {
  std::vector<void *> buffers;
  for (const BufferSpec &spec : entry.arguments) {
    void *buffer = arguments.lookup(spec.name);
    if (!buffer)
      return artifactError("no buffer for argument '" + spec.name + "' of " +
                           entry.name);
    buffers.push_back(buffer);
  }
  for (const BufferSpec &spec : entry.results) {
    void *buffer = results.lookup(spec.name);
    if (!buffer)
      return artifactError("no buffer for result '" + spec.name + "' of " +
                           entry.name);
    // The compiled code writes such a result into its argument's buffer.
    if (spec.inPlace && buffer != arguments.lookup(spec.name))
      return artifactError("result '" + spec.name + "' of " + entry.name +
                           " is updated in place: it must be bound to its "
                           "argument's buffer");
    buffers.push_back(buffer);
  }
  return buffers;
}

void momac::sampleGumbelNoise(std::mt19937_64 &rng, std::vector<float> &noise) {
  for (float &x : noise) {
    double u;
    do
      u = std::generate_canonical<double, 53>(rng);
    while (u <= 0.0 || u >= 1.0);
    x = float(std::log(u) - std::log1p(-u));
  }
}

bool momac::takesBatchRows(const EntryPointSpec &entry) {
  return llvm::any_of(entry.arguments, [](const BufferSpec &argument) {
    return argument.name == kBatchRowsArgument;
  });
}

std::vector<std::vector<float>>
momac::allocateResults(const EntryPointSpec &entry,
                       llvm::StringMap<void *> &results) {
  std::vector<std::vector<float>> buffers;
  for (const BufferSpec &spec : entry.results)
    buffers.emplace_back(spec.numElements(), 0.0f);
  for (auto [spec, buffer] : llvm::zip(entry.results, buffers))
    results[spec.name] = buffer.data();
  return buffers;
}

llvm::Error momac::checkMemoryEstimate(int64_t bytes, llvm::StringRef what,
                                       int64_t limitBytes) {
  int64_t limit = limitBytes;
  llvm::StringRef source = "--memory-limit";
  if (limit <= 0) {
    limit = int64_t(::sysconf(_SC_PHYS_PAGES)) * int64_t(::sysconf(_SC_PAGESIZE));
    source = "this machine's memory";
  }
  if (limit <= 0 || bytes <= limit)
    return llvm::Error::success();
  return artifactError(llvm::formatv(
      "{0} needs at least {1:F2} GB, more than {2} ({3:F2} GB)", what,
      double(bytes) / 1e9, source, double(limit) / 1e9));
}

std::string LoadedArtifact::gemmLibraries() const {
  bool bf16 = config().train.precision == Precision::BF16;
  // A bf16 GEMM momac chose at compile time is in the manifest; one the
  // runtime chooses, the device names.
  if (bf16 && !manifest().bf16Gemm.empty())
    return device().gemmLibraries(false) + "; bf16 GEMM: " +
           manifest().bf16Gemm;
  return device().gemmLibraries(bf16);
}
