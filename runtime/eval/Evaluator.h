//===- Evaluator.h - Mean losses of weights on held-out data ----*- C++ -*-===//
//
// momarun eval: batches of B sequences through the compiled @forward (batch
// routing), and with causal routing through @forward_causal (MODEL_SPEC
// section 6: a token goes to an expert, or through a MoD block, iff its
// auxiliary score is above 0.5), with the weights kept on the artifact's
// device for every batch.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_EVAL_EVALUATOR_H
#define MOMAC_RUNTIME_EVAL_EVALUATOR_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace momac {

class LoadedArtifact;
class Weights;

struct EvalOptions {
  std::string dataPrefix;
  /// Sequences per batch; unset: the artifact's train.batch_size.
  std::optional<int64_t> batchSize;
  /// Batches; 0: one pass over the data (at least one batch).
  uint64_t batches = 0;
  /// Also evaluate with causal routing (models with aux_routers).
  bool causal = false;
};

struct EvalResult {
  uint64_t batches = 0;
  int64_t batchSize = 0;
  double seconds = 0;
  /// The mean loss over batches; per modality, pooled over every target of
  /// the modality (modalityTargets of them).
  double loss = 0;
  std::vector<double> modalityLoss;
  std::vector<uint64_t> modalityTargets;
  /// With causal routing: the same, and per router how often it disagrees
  /// with the batch routing ("disagreement.<router>").
  double causalLoss = 0;
  std::vector<double> causalModalityLoss;
  std::vector<std::pair<std::string, double>> disagreements;
};

/// Evaluates `weights` on `options.dataPrefix` with `artifact`'s forward
/// pass; an error for a bad batch size or data, or a model without
/// auxiliary routers asked for causal routing.
llvm::Expected<EvalResult> evaluate(const LoadedArtifact &artifact,
                                    Weights &weights,
                                    const EvalOptions &options);

} // namespace momac

#endif // MOMAC_RUNTIME_EVAL_EVALUATOR_H
