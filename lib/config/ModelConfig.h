//===- ModelConfig.h - MoMa model descriptions ------------------*- C++ -*-===//
//
// The in-memory form of a model description (shared/MODEL_SPEC.md section 1)
// and its parser. Parsing validates every key, type, default, range and
// cross-field rule; an invalid description yields an llvm::Error whose message
// is one line, "<json.path>: expected ..., got ...". Nothing in here asserts on
// user input.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_LIB_CONFIG_MODELCONFIG_H
#define MOMAC_LIB_CONFIG_MODELCONFIG_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace momac {

/// A half-open range of token ids [lo, hi).
struct TokenRange {
  int64_t lo = 0;
  int64_t hi = 0;
  bool contains(int64_t id) const { return lo <= id && id < hi; }
};

struct Modality {
  std::string name;
  /// The ranges as written in the description (may be empty for the default).
  std::vector<TokenRange> declaredRanges;
  /// Every id the modality owns, sorted and disjoint. For the default modality
  /// this is the complement of all declared ranges inside [0, V).
  std::vector<TokenRange> ranges;
  bool isDefault() const { return declaredRanges.empty(); }
};

struct ExpertGroup {
  std::string name;
  std::vector<std::string> modalities;
  int64_t experts = 1;
  /// Indices into ModelConfig::modalities, in the order listed.
  std::vector<unsigned> modalityIndices;
};

struct MoeConfig {
  int64_t every = 1;
  std::vector<ExpertGroup> groups;
  double capacityFactor = 1.0;
  bool gumbel = false;
};

struct ModConfig {
  int64_t every = 2;
  int64_t offset = 0;
  double capacity = 0.25;
};

enum class NormOrder { Swin, Pre };
enum class Precision { FP32, BF16 };

struct TrainConfig {
  int64_t batchSize = 8;
  int64_t microBatches = 1;
  int64_t totalSteps = 1000;
  double lr = 1e-4;
  double minLr = 1e-6;
  int64_t warmupSteps = 4000;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-5;
  double weightDecay = 0.1;
  double gradClip = 1.0;
  Precision precision = Precision::FP32;
  int64_t seed = 0;
};

struct ModelConfig {
  std::string name;
  int64_t vocabSize = 65536;
  std::vector<Modality> modalities;
  int64_t dModel = 0;
  int64_t nLayers = 0;
  int64_t nHeads = 0;
  int64_t ffnHidden = 0;
  int64_t seqLen = 0;
  NormOrder norm = NormOrder::Swin;
  double normEps = 1e-5;
  bool qkNorm = true;
  double ropeTheta = 10000.0;
  double zLoss = 1e-5;
  std::optional<MoeConfig> moe;
  std::optional<ModConfig> mod;
  bool auxRouters = false;
  TrainConfig train;

  int64_t headDim() const { return dModel / nHeads; }
  bool isMoeLayer(int64_t layer) const {
    return moe && layer % moe->every == 0;
  }
  bool isModLayer(int64_t layer) const {
    return mod && layer % mod->every == mod->offset;
  }
  /// The modality owning `tokenId`, or -1 when outside [0, V).
  int modalityOf(int64_t tokenId) const;
  /// How many targets of each modality a batch of [B, seq_len + 1] token ids
  /// has (the ids at positions 1..seq_len of each row); ids must be in
  /// [0, V). Per-modality losses are pooled over micro-batches with these.
  std::vector<uint64_t> countTargetsByModality(llvm::ArrayRef<int32_t> batch) const;
  /// The expert group a modality belongs to (only meaningful with `moe`).
  unsigned groupOfModality(unsigned modality) const;
  /// Every token range routed to `group`, sorted and disjoint.
  std::vector<TokenRange> groupRanges(const ExpertGroup &group) const;
};

/// Parses and validates a description. `jsonText` is the whole file.
llvm::Expected<ModelConfig> parseModelConfig(llvm::StringRef jsonText);

/// Reads `path` and parses it; I/O errors name the file.
llvm::Expected<ModelConfig> loadModelConfig(llvm::StringRef path);

} // namespace momac

#endif // MOMAC_LIB_CONFIG_MODELCONFIG_H
