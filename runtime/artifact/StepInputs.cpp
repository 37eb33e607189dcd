//===- StepInputs.cpp - The buffers of one entry-point call ---------------===//

#include "runtime/artifact/StepInputs.h"

#include "runtime/artifact/LoadedArtifact.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"

#include <cstring>

using namespace momac;

namespace {

llvm::Error inputError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message.str());
}

/// Reads a raw little-endian float32 file.
llvm::Expected<std::vector<float>> readFloatFile(llvm::StringRef path) {
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                            /*RequiresNullTerminator=*/false);
  if (!buffer)
    return inputError(path + ": cannot read: " + buffer.getError().message());
  llvm::StringRef bytes = (*buffer)->getBuffer();
  if (bytes.empty() || bytes.size() % 4 != 0)
    return inputError(llvm::formatv(
        "{0}: {1} bytes is not a whole, nonzero number of float32 values",
        path, bytes.size()));
  std::vector<float> values(bytes.size() / 4);
  std::memcpy(values.data(), bytes.data(), bytes.size());
  return values;
}

} // namespace

std::vector<std::vector<float>>
momac::allocateResults(const EntryPointSpec &entry) {
  std::vector<std::vector<float>> results;
  for (const BufferSpec &spec : entry.results)
    results.emplace_back(spec.numElements());
  return results;
}

llvm::Expected<std::vector<void *>>
momac::entryBuffers(const EntryPointSpec &entry, std::vector<int32_t> &tokens,
                    int32_t &batchRows,
                    const llvm::StringMap<void *> &parameters,
                    std::vector<float> &noise,
                    std::vector<std::vector<float>> &results) {
  llvm::StringMap<void *> arguments = parameters, resultBuffers;
  arguments["tokens"] = tokens.data();
  if (takesBatchRows(entry))
    arguments[kBatchRowsArgument] = &batchRows;
  for (const BufferSpec &spec : entry.arguments) {
    if (spec.name != kGumbelNoiseArgument)
      continue;
    if (noise.empty())
      noise.assign(spec.numElements(), 0.0f);
    if (int64_t(noise.size()) != spec.numElements())
      return inputError(llvm::formatv(
          "the router noise has {0} values, but the '{1}' entry point takes "
          "{2} ([n_layers, B*S, max experts])",
          noise.size(), entry.name, spec.numElements()));
    arguments[spec.name] = noise.data();
  }
  for (auto [spec, result] : llvm::zip(entry.results, results))
    resultBuffers[spec.name] = result.data();
  return bindByName(entry, arguments, resultBuffers);
}

std::pair<int64_t, int64_t> momac::batchRange(const EntryPointSpec &entry,
                                              const Manifest &manifest) {
  return {takesBatchRows(entry) ? 1 : manifest.batchSize, manifest.batchSize};
}

llvm::Expected<std::vector<int32_t>>
momac::readTokenFile(llvm::StringRef path, const Manifest &manifest,
                     const EntryPointSpec &entry, int32_t &batchRows) {
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                            /*RequiresNullTerminator=*/false);
  if (!buffer)
    return inputError(path + ": cannot read: " + buffer.getError().message());
  llvm::StringRef bytes = (*buffer)->getBuffer();
  const uint64_t rowBytes = 4 * uint64_t(manifest.seqLen + 1);
  if (bytes.empty() || bytes.size() % rowBytes != 0)
    return inputError(llvm::formatv(
        "{0}: {1} bytes is not a whole number of sequences of {2} int32 "
        "tokens (seq_len + 1)",
        path, bytes.size(), manifest.seqLen + 1));
  uint64_t rows = bytes.size() / rowBytes;
  auto [fewest, most] = batchRange(entry, manifest);
  if (int64_t(rows) < fewest || int64_t(rows) > most)
    return inputError(
        fewest == most
            ? llvm::formatv("{0}: holds {1} sequences, but this artifact takes "
                            "exactly {2} (recompile it with this momac for "
                            "any batch size up to train.batch_size)",
                            path, rows, most)
                  .str()
            : llvm::formatv("{0}: holds {1} sequences, but the artifact takes "
                            "at most {2} (train.batch_size in the model "
                            "description it was compiled from)",
                            path, rows, most)
                  .str());
  batchRows = int32_t(rows);
  std::vector<int32_t> tokens(most * (manifest.seqLen + 1), 0);
  std::memcpy(tokens.data(), bytes.data(), bytes.size());
  for (size_t i = 0; i < rows * (manifest.seqLen + 1); ++i)
    if (tokens[i] < 0 || tokens[i] >= manifest.vocabSize)
      return inputError(llvm::formatv(
          "{0}: token {1} of sequence {2} is {3}, outside [0, {4})", path,
          i % (manifest.seqLen + 1), i / (manifest.seqLen + 1), tokens[i],
          manifest.vocabSize));
  return tokens;
}

llvm::Expected<std::vector<float>>
momac::readRouterNoise(llvm::StringRef path, const EntryPointSpec &entry,
                       const Manifest &manifest, int64_t layers,
                       int32_t batchRows) {
  llvm::Expected<std::vector<float>> noise = readFloatFile(path);
  if (!noise)
    return noise.takeError();
  if (!llvm::any_of(entry.arguments, [](const BufferSpec &argument) {
        return argument.name == kGumbelNoiseArgument;
      }))
    return inputError("--noise: the model has no router noise (moe.gumbel "
                      "with a group of several experts)");
  // [n_layers, B*S, E] as given, into the compiled [n_layers, max, E].
  const int64_t given = int64_t(batchRows) * manifest.seqLen;
  const int64_t bound = manifest.batchSize * manifest.seqLen;
  if (given == bound || noise->size() % (layers * given) != 0)
    return noise;
  const size_t experts = noise->size() / (layers * given);
  std::vector<float> placed(layers * bound * experts, 0.0f);
  for (int64_t l = 0; l < layers; ++l)
    std::copy_n(noise->begin() + l * given * experts, given * experts,
                placed.begin() + l * bound * experts);
  return placed;
}
