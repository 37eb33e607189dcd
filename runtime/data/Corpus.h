//===- Corpus.h - Writing training corpora ----------------------*- C++ -*-===//
//
// Two ways to make a Megatron indexed dataset for a model:
// - a synthetic mixed-modal corpus with structure to learn: byte-level text
//   from files on the machine, and images as runs of codes between
//   begin/end-of-image sentinels whose neighbouring codes are correlated;
// - token ids from text (one document per line, ids separated by spaces) or
//   JSONL (one document per line: a list of ids or {"tokens": [...]}).
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_DATA_CORPUS_H
#define MOMAC_RUNTIME_DATA_CORPUS_H

#include "lib/config/ModelConfig.h"

#include "llvm/Support/Error.h"

#include <string>
#include <vector>

namespace momac {

struct SyntheticCorpusOptions {
  int64_t documents = 1000;
  /// Codes per image: a square grid, row-major (rounded down to a square).
  int64_t imageTokens = 64;
  /// Text bytes per document, between the two bounds.
  int64_t minTextBytes = 64;
  int64_t maxTextBytes = 512;
  /// Share of documents that end with an image.
  double imageFraction = 0.6;
  uint64_t seed = 0;
  /// Files whose bytes make up the text; empty: Debian's license texts.
  std::vector<std::string> textFiles;
};

struct CorpusStatistics {
  int64_t documents = 0;
  int64_t tokens = 0;
  int64_t textTokens = 0;
  int64_t imageTokens = 0;
};

/// Writes PREFIX.bin/.idx. Text needs a modality named "text" owning at
/// least 256 ids (byte b is its b-th id); images need one named "image".
llvm::Expected<CorpusStatistics>
writeSyntheticCorpus(const ModelConfig &config, llvm::StringRef prefix,
                     const SyntheticCorpusOptions &options);

/// Token-id documents from text (one per line, ids separated by spaces) or
/// JSONL (by the .jsonl extension: a list or {"tokens": [...]} per line);
/// blank lines are skipped. An id outside [0, vocab_size) is an error
/// naming the line.
llvm::Expected<std::vector<std::vector<int64_t>>>
readTokenDocuments(const ModelConfig &config, llvm::StringRef input);

/// Converts token-id text or JSONL (chosen by the .jsonl extension) into
/// PREFIX.bin/.idx; ids must lie in [0, vocab_size). Errors name the line.
llvm::Expected<CorpusStatistics> importTokenCorpus(const ModelConfig &config,
                                                   llvm::StringRef input,
                                                   llvm::StringRef prefix);

} // namespace momac

#endif // MOMAC_RUNTIME_DATA_CORPUS_H
