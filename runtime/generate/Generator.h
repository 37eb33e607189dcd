//===- Generator.h - Causal decoding with compiled decode steps --*- C++ -*-===//
//
// momarun generate (MODEL_SPEC section 6): token by token, with the
// artifact's @decode_step, which routes every token by the auxiliary
// routers and keeps per-layer key/value caches. Up to train.batch_size
// prompts decode together, one per cache slot; causal routing decides per
// token, so the prompts do not affect each other.
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
  /// Where to write, for the first prompt, the logits of every position
  /// decoded (prompt and new tokens), raw float32 [positions, V]; empty:
  /// none.
  std::string logitsPath;
};

struct GeneratedSequence {
  std::vector<int64_t> tokens; // the new tokens, after the prompt
};

/// Decodes every prompt. Errors: a model without auxiliary routers (how
/// to add them), more prompts than train.batch_size, an empty prompt, a
/// prompt plus max_new longer than seq_len.
llvm::Expected<std::vector<GeneratedSequence>>
generate(const LoadedArtifact &artifact, const GenerateOptions &options);

} // namespace momac

#endif // MOMAC_RUNTIME_GENERATE_GENERATOR_H
