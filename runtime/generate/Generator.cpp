//===- Generator.cpp - Causal decoding with compiled decode steps ---------===//

#include "runtime/generate/Generator.h"

#include "runtime/artifact/LoadedArtifact.h"
#include "runtime/model/Weights.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <chrono>
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

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

} // namespace

llvm::Error momac::checkGenerateRequest(const LoadedArtifact &artifact,
                                        const GenerateOptions &options) {
  const Manifest &manifest = artifact.manifest();
  if (!artifact.config().auxRouters)
    return generateError(
        manifest.model +
        " has no auxiliary routers, and expert choice and MoD choose over a "
        "whole batch, which generation does not have: add \"aux_routers\": "
        "true to the description, recompile, train the model (or load its "
        "weights) and train the routers with momarun train-aux (MODEL_SPEC "
        "section 6)");
  if (options.prompts.empty())
    return generateError("no prompt to continue");
  if (int64_t(options.prompts.size()) > manifest.batchSize)
    return generateError(llvm::formatv(
        "{0} prompts, but this artifact decodes at most {1} at a time "
        "(train.batch_size)",
        options.prompts.size(), manifest.batchSize));
  if (options.maxNew < 1)
    return generateError("--max-new must be at least 1");
  for (auto [i, prompt] : llvm::enumerate(options.prompts)) {
    if (prompt.empty())
      return generateError(llvm::formatv("prompt {0} is empty", i + 1));
    // Compared without adding, so that no --max-new can overflow.
    if (options.maxNew > manifest.seqLen - int64_t(prompt.size()))
      return generateError(llvm::formatv(
          "prompt {0} has {1} tokens; with --max-new {2} that is more than "
          "the {3} positions this artifact supports (seq_len)",
          i + 1, prompt.size(), options.maxNew, manifest.seqLen));
  }
  return llvm::Error::success();
}

namespace {

/// The state of one generation: weights, the caches (two sets: a call
/// reads one and writes the other), the token and logits buffers, and a
/// sampler per prompt.
class Decoder {
public:
  Decoder(const LoadedArtifact &artifact, const GenerateOptions &options,
          Weights weights)
      : artifact(artifact), options(options), weights(std::move(weights)),
        slots(artifact.manifest().batchSize),
        context(artifact.manifest().seqLen),
        vocab(artifact.manifest().vocabSize), logits(slots * vocab) {
    out.resize(options.prompts.size());
    // One generator per prompt: a prompt samples the same tokens alone as
    // next to others.
    for (size_t s = 0; s < options.prompts.size(); ++s) {
      std::seed_seq seeds{uint64_t(options.seed), uint64_t(s)};
      rngs.emplace_back(seeds);
    }
  }

  /// Allocates both cache sets and keeps them and the weights on the
  /// device for the whole generation: each call then copies only tokens
  /// and positions up and the logits down.
  llvm::Error prepare(const EntryPointSpec &decodeSpec);
  /// Binds `spec` with `inputs`, the caches of the current set as its
  /// arguments and the other set as its results, and calls `entry`; the
  /// other set is then current.
  llvm::Error call(const EntryPointSpec &spec, const EntryFunction &entry,
                   llvm::StringMap<void *> inputs);
  /// Appends to each prompt's new tokens one sampled from its row of the
  /// logits, and writes the first prompt's row to the logits file.
  void sampleNext();
  /// Writes the first prompt's row of the logits to the logits file.
  void recordLogits();
  llvm::Error openLogits();
  llvm::Error closeLogits();

  /// The prompts in one @prefill call; samples each one's first new token.
  llvm::Error prefill(const EntryPointSpec &spec, const EntryFunction &entry);
  /// Prompts and new tokens one position per call, every prompt's p-th
  /// token in call p (--prompt-by-token).
  llvm::Error tokenByToken(const EntryPointSpec &spec,
                           const EntryFunction &entry);
  /// After prefill: the rest of --max-new, one token per prompt and call.
  llvm::Error decode(const EntryPointSpec &spec, const EntryFunction &entry);

  Generation result;

private:
  const LoadedArtifact &artifact;
  const GenerateOptions &options;
  Weights weights;
  const int64_t slots, context, vocab;
  std::vector<float> logits;
  std::vector<GeneratedSequence> &out = result.sequences;
  std::vector<std::mt19937_64> rngs;
  /// Cache buffers by name, per set; `current` is the set the next call
  /// reads.
  llvm::StringMap<std::vector<float>> caches[2];
  int current = 0;
  std::unique_ptr<llvm::raw_fd_ostream> logitsOut;
};

llvm::Error Decoder::prepare(const EntryPointSpec &decodeSpec) {
  for (const BufferSpec &buffer : decodeSpec.arguments)
    if (llvm::StringRef(buffer.name).starts_with("cache."))
      for (auto &set : caches)
        set[buffer.name].assign(buffer.numElements(), 0.0f);
  if (llvm::Error error = weights.keepOnDevice(artifact))
    return error;
  for (auto &set : caches)
    for (auto &cache : set)
      if (llvm::Error error = artifact.device().keep(
              cache.second.data(), cache.second.size() * sizeof(float),
              "a KV cache"))
        return error;
  return openLogits();
}

llvm::Error Decoder::call(const EntryPointSpec &spec,
                          const EntryFunction &entry,
                          llvm::StringMap<void *> inputs) {
  llvm::StringMap<void *> results;
  for (size_t i = 0; i < weights.size(); ++i)
    inputs[weights.spec(i).name] = weights[i].data();
  results["logits"] = logits.data();
  for (auto &cache : caches[current]) {
    inputs[cache.first()] = cache.second.data();
    results[cache.first()] = caches[1 - current][cache.first()].data();
  }
  auto buffers = bindByName(spec, inputs, results);
  if (!buffers)
    return buffers.takeError();
  if (llvm::Error error = entry(buffers->data()))
    return error;
  current = 1 - current;
  return llvm::Error::success();
}

void Decoder::recordLogits() {
  if (logitsOut)
    logitsOut->write(reinterpret_cast<const char *>(logits.data()),
                     vocab * sizeof(float));
}

void Decoder::sampleNext() {
  recordLogits();
  for (size_t s = 0; s < options.prompts.size(); ++s)
    out[s].tokens.push_back(
        sample(llvm::ArrayRef<float>(logits).slice(s * vocab, vocab),
               options.temperature, options.topP, rngs[s]));
}

llvm::Error Decoder::openLogits() {
  if (options.logitsPath.empty())
    return llvm::Error::success();
  std::error_code ec;
  logitsOut = std::make_unique<llvm::raw_fd_ostream>(options.logitsPath, ec);
  if (ec)
    return generateError(options.logitsPath + ": " + ec.message());
  return llvm::Error::success();
}

llvm::Error Decoder::closeLogits() {
  if (!logitsOut)
    return llvm::Error::success();
  logitsOut->close();
  if (!logitsOut->has_error())
    return llvm::Error::success();
  std::string message = logitsOut->error().message();
  logitsOut->clear_error();
  return generateError(options.logitsPath + ": " + message);
}

llvm::Error Decoder::prefill(const EntryPointSpec &spec,
                             const EntryFunction &entry) {
  // Every prompt's tokens, prompt after prompt; rows past them are unused.
  std::vector<int32_t> tokens(slots * context, 0), positions(slots * context, 0),
      sequenceIds(slots * context, 0), lastRows(slots, 0);
  int32_t rows = 0;
  for (auto [s, prompt] : llvm::enumerate(options.prompts)) {
    for (auto [p, token] : llvm::enumerate(prompt)) {
      tokens[rows] = int32_t(token);
      positions[rows] = int32_t(p);
      sequenceIds[rows] = int32_t(s);
      ++rows;
    }
    lastRows[s] = rows - 1;
  }
  const Clock::time_point start = Clock::now();
  if (llvm::Error error = call(spec, entry,
                               {{"tokens", tokens.data()},
                                {"positions", positions.data()},
                                {"sequence_ids", sequenceIds.data()},
                                {"last_rows", lastRows.data()},
                                {"prefill_rows", &rows}}))
    return error;
  result.promptSeconds = secondsSince(start);
  result.promptTokens = rows;
  result.batchedPrompt = true;
  sampleNext();
  return llvm::Error::success();
}

llvm::Error Decoder::tokenByToken(const EntryPointSpec &spec,
                                  const EntryFunction &entry) {
  std::vector<int32_t> tokens(slots, 0), positions(slots, 0);
  int64_t longest = 0;
  for (const auto &prompt : options.prompts)
    longest = std::max<int64_t>(longest, prompt.size());
  Clock::time_point start = Clock::now();
  // Position p feeds every prompt's p-th token (its prompt's, or the one it
  // generated), so a shorter prompt decodes while a longer one still reads
  // its prompt; slots past the prompts decode token 0 on their own.
  for (int64_t p = 0; p < longest + options.maxNew - 1; ++p) {
    for (auto [s, prompt] : llvm::enumerate(options.prompts)) {
      int64_t length = int64_t(prompt.size());
      int64_t position = std::min(p, length + options.maxNew - 1);
      tokens[s] = int32_t(position < length
                              ? prompt[position]
                              : out[s].tokens[position - length]);
      positions[s] = int32_t(position);
    }
    if (llvm::Error error = call(spec, entry,
                                 {{"tokens", tokens.data()},
                                  {"positions", positions.data()}}))
      return error;
    if (p < int64_t(options.prompts[0].size()) + options.maxNew - 1)
      recordLogits();
    for (auto [s, prompt] : llvm::enumerate(options.prompts)) {
      int64_t length = int64_t(prompt.size());
      // A prompt's last token, and every token after it, predict the next.
      if (p + 1 >= length && int64_t(out[s].tokens.size()) < options.maxNew)
        out[s].tokens.push_back(
            sample(llvm::ArrayRef<float>(logits).slice(s * vocab, vocab),
                   options.temperature, options.topP, rngs[s]));
    }
    // The times of prompt and decoding calls, apart where the prompts have
    // one length.
    if (p + 1 == longest) {
      result.promptSeconds = secondsSince(start);
      start = Clock::now();
    }
  }
  result.decodeSeconds = secondsSince(start);
  for (const auto &prompt : options.prompts)
    result.promptTokens += int64_t(prompt.size());
  result.decodedTokens =
      (options.maxNew - 1) * int64_t(options.prompts.size());
  return llvm::Error::success();
}

llvm::Error Decoder::decode(const EntryPointSpec &spec,
                            const EntryFunction &entry) {
  std::vector<int32_t> tokens(slots, 0), positions(slots, 0);
  const Clock::time_point start = Clock::now();
  for (int64_t step = 1; step < options.maxNew; ++step) {
    // Prompt s feeds its newest token at the position after it; slots past
    // the prompts decode token 0 at `step` in their own rows.
    for (int64_t s = 0; s < slots; ++s) {
      bool used = s < int64_t(options.prompts.size());
      tokens[s] = used ? int32_t(out[s].tokens.back()) : 0;
      positions[s] = int32_t(
          used ? int64_t(options.prompts[s].size()) + step - 1 : step);
    }
    if (llvm::Error error = call(spec, entry,
                                 {{"tokens", tokens.data()},
                                  {"positions", positions.data()}}))
      return error;
    sampleNext();
  }
  result.decodeSeconds = secondsSince(start);
  result.decodedTokens =
      (options.maxNew - 1) * int64_t(options.prompts.size());
  return llvm::Error::success();
}

} // namespace

llvm::Expected<Generation> momac::generate(const LoadedArtifact &artifact,
                                           const GenerateOptions &options) {
  if (llvm::Error error = checkGenerateRequest(artifact, options))
    return std::move(error);
  auto decodeEntry = artifact.entryPoint("decode_step");
  if (!decodeEntry)
    return decodeEntry.takeError();
  llvm::Expected<Weights> weights =
      Weights::load(artifact.manifest(), options.weights);
  if (!weights)
    return weights.takeError();
  // NaN weights would decode argmax 0 forever: a clear error instead.
  if (llvm::Error error = weights->checkFinite(options.weights))
    return std::move(error);

  Decoder decoder(artifact, options, std::move(*weights));
  if (llvm::Error error = decoder.prepare(*decodeEntry->first))
    return std::move(error);
  // Artifacts compiled before @prefill existed take the prompt by token.
  const bool batched = !options.promptByToken &&
                       artifact.manifest().findEntryPoint("prefill");
  if (batched) {
    auto prefillEntry = artifact.entryPoint("prefill");
    if (!prefillEntry)
      return prefillEntry.takeError();
    if (llvm::Error error =
            decoder.prefill(*prefillEntry->first, prefillEntry->second))
      return std::move(error);
    if (llvm::Error error =
            decoder.decode(*decodeEntry->first, decodeEntry->second))
      return std::move(error);
  } else if (llvm::Error error = decoder.tokenByToken(*decodeEntry->first,
                                                      decodeEntry->second)) {
    return std::move(error);
  }
  if (llvm::Error error = decoder.closeLogits())
    return std::move(error);
  return std::move(decoder.result);
}
