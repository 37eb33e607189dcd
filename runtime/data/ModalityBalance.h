//===- ModalityBalance.h - The paper's balanced per-rank data mix -*- C++ -*-===//
//
// With modality-aware experts, a rank whose micro-batches hold more tokens
// of one modality than the model's expert mix expects works longer than the
// others, and every rank waits for it at the next collective (MoMa,
// section on distributed training). `momarun train --balance-modalities`
// deals the sequences of each step to the ranks so that every rank's token
// mix stays close to the target: each modality's share of the model's
// experts (the text:image expert ratio), or, without experts, the step's
// own mix. The step still takes the next R * M * B sequences; only which
// rank trains which of them changes.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_DATA_MODALITYBALANCE_H
#define MOMAC_RUNTIME_DATA_MODALITYBALANCE_H

#include "lib/config/ModelConfig.h"

#include <cstdint>
#include <vector>

namespace momac {

/// Each modality's target share of a rank's tokens: its expert group's
/// share of the experts (split evenly among the group's modalities); empty
/// for a model without experts.
std::vector<double> modalityTargetShares(const ModelConfig &config);

/// Deals sequences (by their per-modality token counts) to `ranks` ranks,
/// `perRank` each (sequences.size() == ranks * perRank), so that each
/// rank's modality shares stay close to `target` (empty: the sequences'
/// overall shares). Greedy: the sequences furthest from the target first,
/// each to the rank with room whose squared distance from the target, in
/// tokens, it increases least.
/// Returns each rank's sequence indices in increasing order. Deterministic:
/// every rank computes the same deal.
std::vector<std::vector<size_t>>
balanceByModality(const std::vector<std::vector<uint64_t>> &sequences,
                  std::vector<double> target, int ranks, size_t perRank);

/// max - min over ranks of one modality's share of the rank's tokens, the
/// largest over the modalities.
double modalityShareSpread(const std::vector<std::vector<uint64_t>> &rankCounts);

} // namespace momac

#endif // MOMAC_RUNTIME_DATA_MODALITYBALANCE_H
