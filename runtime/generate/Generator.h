//===- Generator.h - Causal decoding with compiled decode steps --*- C++ -*-===//
//
// momarun generate (MODEL_SPEC section 6): the artifact's @prefill runs
// every prompt token of every prompt in one call, filling per-layer
// key/value caches; @decode_step then adds one token per prompt and call.
// Both route every token by the auxiliary routers, which decide per token,
// so the prompts do not affect each other and a prompt decoded in one call
// gives the caches and logits of its tokens decoded one by one (which
// --prompt-by-token still does, for comparison). Up to train.batch_size
// prompts decode together, one per cache slot.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_GENERATE_GENERATOR_H
#define MOMAC_RUNTIME_GENERATE_GENERATOR_H

#include "llvm/Support/Error.h"

#include <cstdint>
#include <string>
#include <vector>

namespace momac {

class LoadedArtifact;

struct GenerateOptions {
  std::string weights;
  std::vector<std::vector<int64_t>> prompts;
  int64_t maxNew = 32;
  /// 0: greedy (the most likely token, the lower id on ties).
  double temperature = 1.0;
  /// Nucleus sampling: the smallest set of most likely tokens whose
  /// probability reaches top_p; 1 keeps every token.
  double topP = 1.0;
  uint64_t seed = 0;
  /// Where to write, for the first prompt, the logits that predict each
  /// new token (from its prompt's last token on), raw float32 [max_new, V];
  /// token by token, those of every prompt position too (the first row
  /// predicts the prompt's second token). Empty: none.
  std::string logitsPath;
  /// The prompts through @decode_step one position at a time instead of
  /// one @prefill call (what artifacts without @prefill do anyway).
  bool promptByToken = false;
};

struct GeneratedSequence {
  std::vector<int64_t> tokens; // the new tokens, after the prompt
};

struct Generation {
  std::vector<GeneratedSequence> sequences;
  /// Prompt tokens and the seconds their calls took (prefill), and the
  /// tokens decoded after them, one per prompt and @decode_step call.
  int64_t promptTokens = 0, decodedTokens = 0;
  double promptSeconds = 0, decodeSeconds = 0;
  bool batchedPrompt = false; // through @prefill
};

/// The refusals that need no weights: a model without auxiliary routers
/// (how to add them), more prompts than train.batch_size, an empty prompt,
/// a prompt plus max_new longer than seq_len.
llvm::Error checkGenerateRequest(const LoadedArtifact &artifact,
                                 const GenerateOptions &options);

/// Decodes every prompt, after checkGenerateRequest's checks.
llvm::Expected<Generation> generate(const LoadedArtifact &artifact,
                                    const GenerateOptions &options);

} // namespace momac

#endif // MOMAC_RUNTIME_GENERATE_GENERATOR_H
