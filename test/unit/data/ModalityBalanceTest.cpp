//===- ModalityBalanceTest.cpp - The balanced per-rank data mix -----------===//

#include "runtime/data/ModalityBalance.h"

#include "gtest/gtest.h"

#include <random>

using namespace momac;

namespace {

std::vector<std::vector<uint64_t>>
rankCounts(const std::vector<std::vector<uint64_t>> &sequences,
           const std::vector<std::vector<size_t>> &deal) {
  std::vector<std::vector<uint64_t>> counts;
  for (const std::vector<size_t> &indices : deal) {
    std::vector<uint64_t> sum(sequences[0].size(), 0);
    for (size_t i : indices)
      for (size_t m = 0; m < sum.size(); ++m)
        sum[m] += sequences[i][m];
    counts.push_back(sum);
  }
  return counts;
}

TEST(ModalityBalanceTest, UnevenDocumentsAreSpreadEvenly) {
  // Sequences in corpus order: first all text, then all image (documents
  // of one modality each): the plain split gives rank 0 only text.
  std::vector<std::vector<uint64_t>> sequences;
  for (int i = 0; i < 8; ++i)
    sequences.push_back({64, 0});
  for (int i = 0; i < 8; ++i)
    sequences.push_back({0, 64});
  std::vector<std::vector<size_t>> plain = {{0, 1, 2, 3, 4, 5, 6, 7},
                                            {8, 9, 10, 11, 12, 13, 14, 15}};
  EXPECT_DOUBLE_EQ(modalityShareSpread(rankCounts(sequences, plain)), 1.0);
  auto deal = balanceByModality(sequences, {0.5, 0.5}, 2, 8);
  ASSERT_EQ(deal.size(), 2u);
  EXPECT_EQ(deal[0].size(), 8u);
  EXPECT_EQ(deal[1].size(), 8u);
  EXPECT_DOUBLE_EQ(modalityShareSpread(rankCounts(sequences, deal)), 0.0);
  // Every sequence is dealt once, in increasing order per rank.
  std::vector<int> seen(16, 0);
  for (const auto &indices : deal) {
    EXPECT_TRUE(std::is_sorted(indices.begin(), indices.end()));
    for (size_t i : indices)
      ++seen[i];
  }
  EXPECT_EQ(seen, std::vector<int>(16, 1));
}

TEST(ModalityBalanceTest, RandomMixesGetCloserToTheTarget) {
  std::mt19937 rng(3);
  std::vector<std::vector<uint64_t>> sequences;
  for (int i = 0; i < 32; ++i) {
    uint64_t image = rng() % 65;
    sequences.push_back({64 - image, image});
  }
  std::vector<std::vector<size_t>> plain(4);
  for (size_t i = 0; i < 32; ++i)
    plain[i / 8].push_back(i);
  // Without a target (a model without experts): the window's own mix.
  auto deal = balanceByModality(sequences, {}, 4, 8);
  EXPECT_LT(modalityShareSpread(rankCounts(sequences, deal)),
            0.5 * modalityShareSpread(rankCounts(sequences, plain)));
}

TEST(ModalityBalanceTest, TargetIsTheExpertMix) {
  ModelConfig config;
  config.modalities.resize(2);
  MoeConfig moe;
  moe.groups = {ExpertGroup{"text", {"text"}, 7, {0}},
                ExpertGroup{"image", {"image"}, 1, {1}}};
  config.moe = moe;
  std::vector<double> target = modalityTargetShares(config);
  ASSERT_EQ(target.size(), 2u);
  EXPECT_DOUBLE_EQ(target[0], 7.0 / 8.0);
  EXPECT_DOUBLE_EQ(target[1], 1.0 / 8.0);
  config.moe.reset();
  EXPECT_TRUE(modalityTargetShares(config).empty());
}

} // namespace
