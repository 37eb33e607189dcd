//===- ShardUnitsTest.cpp - The FSDP unit layout --------------------------===//

#include "lib/config/ShardUnits.h"

#include "gtest/gtest.h"

using namespace momac;

TEST(ShardUnitsTest, OneUnitPerLayerAndPerOtherParameter) {
  std::vector<std::pair<std::string, int64_t>> params = {
      {"tok_embeddings.weight", 100},
      {"layers.0.attention.wq.weight", 20},
      {"layers.0.attention_norm.weight", 4},
      {"layers.10.feed_forward.w1", 33},
      {"layers.1.ffn_norm.weight", 8},
      {"layers.10.ffn_norm.weight", 8},
      {"norm.weight", 4},
      {"output.weight", 100}};
  std::vector<ShardUnit> units = planShardUnits(params);
  ASSERT_EQ(units.size(), 6u);
  EXPECT_EQ(units[0].name, "tok_embeddings.weight");
  EXPECT_EQ(units[1].name, "layers.0");
  EXPECT_EQ(units[2].name, "layers.10");
  EXPECT_EQ(units[3].name, "layers.1");
  // Offsets start on 16-element boundaries; the unit is padded to one.
  EXPECT_EQ(units[1].offsets, (std::vector<int64_t>{0, 32}));
  EXPECT_EQ(units[1].elements, 48);
  EXPECT_EQ(units[2].parameters, (std::vector<int64_t>{3, 5}));
  EXPECT_EQ(units[2].offsets, (std::vector<int64_t>{0, 48}));
  EXPECT_EQ(units[0].elements, 112);
}

TEST(ShardUnitsTest, ShardsAreEqualAlignedAndCoverTheUnit) {
  ShardUnit unit{"layers.0", {}, {}, 1000};
  EXPECT_EQ(unit.shardElements(1), 1008);
  EXPECT_EQ(unit.shardElements(2), 512);
  EXPECT_EQ(unit.shardElements(3), 336);
  EXPECT_EQ(unit.shardElements(64), 16);
  for (int64_t ranks : {1, 2, 3, 4, 7, 64})
    EXPECT_GE(unit.shardElements(ranks) * ranks, unit.elements);
}
