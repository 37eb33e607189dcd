//===- ModalityBalance.cpp - The paper's balanced per-rank data mix -------===//

#include "runtime/data/ModalityBalance.h"

#include <algorithm>
#include <numeric>

using namespace momac;

std::vector<double> momac::modalityTargetShares(const ModelConfig &config) {
  if (!config.moe)
    return {};
  std::vector<double> shares(config.modalities.size(), 0.0);
  double experts = 0;
  for (const ExpertGroup &group : config.moe->groups)
    experts += double(group.experts);
  for (const ExpertGroup &group : config.moe->groups)
    for (unsigned modality : group.modalityIndices)
      shares[modality] = double(group.experts) / experts /
                         double(group.modalityIndices.size());
  return shares;
}

namespace {

double total(const std::vector<uint64_t> &counts) {
  return double(std::accumulate(counts.begin(), counts.end(), uint64_t(0)));
}

/// Sum over modalities of (share - target)^2.
double deviation(const std::vector<uint64_t> &counts,
                 const std::vector<double> &target) {
  double n = total(counts), sum = 0;
  if (n == 0)
    return 0;
  for (size_t m = 0; m < counts.size(); ++m) {
    double d = double(counts[m]) / n - target[m];
    sum += d * d;
  }
  return sum;
}

} // namespace

std::vector<std::vector<size_t>>
momac::balanceByModality(const std::vector<std::vector<uint64_t>> &sequences,
                         std::vector<double> target, int ranks,
                         size_t perRank) {
  const size_t modalities = sequences.empty() ? 0 : sequences[0].size();
  if (target.empty()) {
    std::vector<uint64_t> all(modalities, 0);
    for (const std::vector<uint64_t> &counts : sequences)
      for (size_t m = 0; m < modalities; ++m)
        all[m] += counts[m];
    target.assign(modalities, 0.0);
    for (size_t m = 0; m < modalities; ++m)
      target[m] = total(all) ? double(all[m]) / total(all) : 0.0;
  }
  std::vector<size_t> order(sequences.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return deviation(sequences[a], target) > deviation(sequences[b], target);
  });
  std::vector<std::vector<size_t>> deal(ranks);
  std::vector<std::vector<uint64_t>> counts(ranks,
                                            std::vector<uint64_t>(modalities));
  for (size_t sequence : order) {
    int best = -1;
    double bestIncrease = 0;
    for (int r = 0; r < ranks; ++r) {
      if (deal[r].size() == perRank)
        continue;
      std::vector<uint64_t> with = counts[r];
      for (size_t m = 0; m < modalities; ++m)
        with[m] += sequences[sequence][m];
      // In tokens, not shares: how far each modality's count is from the
      // target's part of the rank's tokens (an empty rank is not free).
      double increase = deviation(with, target) * total(with) * total(with) -
                        deviation(counts[r], target) * total(counts[r]) *
                            total(counts[r]);
      if (best < 0 || increase < bestIncrease) {
        best = r;
        bestIncrease = increase;
      }
    }
    deal[best].push_back(sequence);
    for (size_t m = 0; m < modalities; ++m)
      counts[best][m] += sequences[sequence][m];
  }
  for (std::vector<size_t> &indices : deal)
    std::sort(indices.begin(), indices.end());
  return deal;
}

double momac::modalityShareSpread(
    const std::vector<std::vector<uint64_t>> &rankCounts) {
  double spread = 0;
  const size_t modalities = rankCounts.empty() ? 0 : rankCounts[0].size();
  for (size_t m = 0; m < modalities; ++m) {
    double low = 1, high = 0;
    for (const std::vector<uint64_t> &counts : rankCounts) {
      double share = total(counts) ? double(counts[m]) / total(counts) : 0;
      low = std::min(low, share);
      high = std::max(high, share);
    }
    spread = std::max(spread, high - low);
  }
  return spread;
}
