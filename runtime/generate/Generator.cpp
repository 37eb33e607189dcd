//===- Generator.cpp - Causal decoding with compiled decode steps ---------===//

#include "runtime/generate/Generator.h"

#include "runtime/artifact/LoadedArtifact.h"
#include "runtime/model/Weights.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

using namespace momac;

namespace {

llvm::Error generateError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 message.str());
}

/// The next token from `logits`: greedy at temperature 0, else sampled
/// from softmax(logits / T) restricted to the top-p nucleus.
int64_t sample(llvm::ArrayRef<float> logits, double temperature, double topP,
               std::mt19937_64 &rng) {
  if (temperature <= 0)
    return std::max_element(logits.begin(), logits.end()) - logits.begin();
  std::vector<double> weights(logits.size());
  double top = *std::max_element(logits.begin(), logits.end());
  for (size_t i = 0; i < logits.size(); ++i)
    weights[i] = std::exp((double(logits[i]) - top) / temperature);
  std::vector<size_t> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return weights[a] > weights[b]; });
  double total = std::accumulate(weights.begin(), weights.end(), 0.0);
  // The nucleus: the most likely tokens until their mass reaches top_p.
  double kept = 0;
  size_t count = 0;
  while (count < order.size() && (count == 0 || kept < topP * total))
    kept += weights[order[count++]];
  std::uniform_real_distribution<double> uniform(0.0, kept);
  double pick = uniform(rng);
  for (size_t i = 0; i < count; ++i) {
    pick -= weights[order[i]];
    if (pick <= 0)
      return int64_t(order[i]);
  }
  return int64_t(order[count - 1]);
}

} // namespace

llvm::Expected<std::vector<GeneratedSequence>>
momac::generate(const LoadedArtifact &artifact,
                const GenerateOptions &options) {
  const Manifest &manifest = artifact.manifest();
  const ModelConfig &config = artifact.config();
  if (!config.auxRouters)
    return generateError(
        manifest.model +
        " has no auxiliary routers, and expert choice and MoD choose over a "
        "whole batch, which generation does not have: add \"aux_routers\": "
        "true to the description, recompile, train the model (or load its "
        "weights) and train the routers with momarun train-aux (MODEL_SPEC "
        "section 6)");
  auto entry = artifact.entryPoint("decode_step");
  if (!entry)
    return entry.takeError();
  const EntryPointSpec &spec = *entry->first;
  const int64_t slots = manifest.batchSize, context = manifest.seqLen;
  const int64_t vocab = manifest.vocabSize;
  if (options.prompts.empty())
    return generateError("no prompt to continue");
  if (int64_t(options.prompts.size()) > slots)
    return generateError(llvm::formatv(
        "{0} prompts, but this artifact decodes at most {1} at a time "
        "(train.batch_size)",
        options.prompts.size(), slots));
  if (options.maxNew < 1)
    return generateError("--max-new must be at least 1");
  for (auto [i, prompt] : llvm::enumerate(options.prompts)) {
    if (prompt.empty())
      return generateError(llvm::formatv("prompt {0} is empty", i + 1));
    // Compared without adding, so that no --max-new can overflow.
    if (options.maxNew > context - int64_t(prompt.size()))
      return generateError(llvm::formatv(
          "prompt {0} has {1} tokens; with --max-new {2} that is more than "
          "the {3} positions this artifact supports (seq_len)",
          i + 1, prompt.size(), options.maxNew, context));
  }
  llvm::Expected<Weights> weights = Weights::load(manifest, options.weights);
  if (!weights)
    return weights.takeError();
  // NaN weights would decode argmax 0 forever: a clear error instead.
  if (llvm::Error error = weights->checkFinite(options.weights))
    return std::move(error);

  // Two sets of caches, read from one and written to the other each step.
  std::vector<int32_t> tokens(slots, 0), positions(slots, 0);
  std::vector<float> logits(slots * vocab);
  llvm::StringMap<void *> arguments[2], results[2];
  std::vector<std::vector<float>> cacheSets[2];
  for (int set = 0; set < 2; ++set) {
    arguments[set]["tokens"] = tokens.data();
    arguments[set]["positions"] = positions.data();
    for (size_t i = 0; i < weights->size(); ++i)
      arguments[set][weights->spec(i).name] = (*weights)[i].data();
    results[set]["logits"] = logits.data();
  }
  for (const BufferSpec &buffer : spec.arguments)
    if (llvm::StringRef(buffer.name).starts_with("cache."))
      for (int set = 0; set < 2; ++set)
        cacheSets[set].emplace_back(buffer.numElements(), 0.0f);
  size_t cacheIndex = 0;
  for (const BufferSpec &buffer : spec.arguments)
    if (llvm::StringRef(buffer.name).starts_with("cache.")) {
      for (int set = 0; set < 2; ++set) {
        arguments[set][buffer.name] = cacheSets[set][cacheIndex].data();
        results[set][buffer.name] = cacheSets[1 - set][cacheIndex].data();
      }
      ++cacheIndex;
    }
  // The weights and both cache sets stay on a CUDA artifact's GPU for the
  // whole generation: each step copies only tokens and positions up and the
  // logits down.
  if (llvm::Error error = weights->keepOnDevice(artifact))
    return std::move(error);
  for (auto &set : cacheSets)
    for (std::vector<float> &cache : set)
      if (llvm::Error error = artifact.device().keep(
              cache.data(), cache.size() * sizeof(float), "a KV cache"))
        return std::move(error);
  std::vector<void *> buffers[2];
  for (int set = 0; set < 2; ++set) {
    auto bound = bindByName(spec, arguments[set], results[set]);
    if (!bound)
      return bound.takeError();
    buffers[set] = std::move(*bound);
  }

  std::unique_ptr<llvm::raw_fd_ostream> logitsOut;
  if (!options.logitsPath.empty()) {
    std::error_code ec;
    logitsOut = std::make_unique<llvm::raw_fd_ostream>(options.logitsPath, ec);
    if (ec)
      return generateError(options.logitsPath + ": " + ec.message());
  }
  // One generator per prompt: a prompt samples the same tokens alone as
  // next to others.
  std::vector<std::mt19937_64> rngs;
  for (size_t s = 0; s < options.prompts.size(); ++s) {
    std::seed_seq seeds{uint64_t(options.seed), uint64_t(s)};
    rngs.emplace_back(seeds);
  }
  std::vector<GeneratedSequence> out(options.prompts.size());
  int64_t longest = 0;
  for (const auto &prompt : options.prompts)
    longest = std::max<int64_t>(longest, prompt.size());
  // Position p feeds every prompt's p-th token (its prompt's, or the one it
  // generated); slots past the prompts decode token 0 on their own.
  for (int64_t p = 0; p < longest + options.maxNew - 1; ++p) {
    for (size_t s = 0; s < options.prompts.size(); ++s) {
      const auto &prompt = options.prompts[s];
      int64_t length = int64_t(prompt.size());
      int64_t end = length + options.maxNew - 1;
      int64_t position = std::min(p, end);
      tokens[s] = int32_t(position < length
                              ? prompt[position]
                              : out[s].tokens[position - length]);
      positions[s] = int32_t(position);
    }
    int set = p % 2;
    if (llvm::Error error = entry->second(buffers[set].data()))
      return error;
    if (logitsOut && p < int64_t(options.prompts[0].size()) +
                             options.maxNew - 1)
      logitsOut->write(reinterpret_cast<const char *>(logits.data()),
                       vocab * sizeof(float));
    for (size_t s = 0; s < options.prompts.size(); ++s) {
      int64_t length = int64_t(options.prompts[s].size());
      // A prompt's last token, and every token after it, predict the next.
      if (p + 1 >= length && int64_t(out[s].tokens.size()) < options.maxNew &&
          p < length + options.maxNew - 1)
        out[s].tokens.push_back(
            sample(llvm::ArrayRef<float>(logits).slice(s * vocab, vocab),
                   options.temperature, options.topP, rngs[s]));
    }
  }
  if (logitsOut) {
    logitsOut->close();
    if (logitsOut->has_error()) {
      std::string message = logitsOut->error().message();
      logitsOut->clear_error();
      return generateError(options.logitsPath + ": " + message);
    }
  }
  // A one-token prompt with --max-new 1 decodes only its prompt: sampled
  // above at p = 0. Every sequence now has max_new tokens.
  return out;
}
