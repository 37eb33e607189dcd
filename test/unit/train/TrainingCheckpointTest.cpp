//===- TrainingCheckpointTest.cpp - Which checkpoint form resume reads ----===//

#include "runtime/train/TrainingCheckpoint.h"

#include "lib/config/ShardUnits.h"
#include "lib/safetensors/Safetensors.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"

#include <gtest/gtest.h>

using namespace momac;

namespace {

class TrainingCheckpointTest : public ::testing::Test {
protected:
  void SetUp() override {
    llvm::SmallString<128> path;
    ASSERT_FALSE(llvm::sys::fs::createUniqueDirectory("momac-ckpt", path));
    directory = std::string(path);
    parameters = {{"w", {2, 2}, "normal", true, false}};
  }
  void TearDown() override { llvm::sys::fs::remove_directories(directory); }

  /// RUN/checkpoint.safetensors at `step`, every weight `value`.
  void writeSingle(int64_t step, float value) {
    CheckpointProgress progress;
    progress.step = step;
    progress.dataPosition = uint64_t(step * 8);
    std::vector<std::vector<float>> weights = {std::vector<float>(4, value)},
                                    moments = {std::vector<float>(4, 0.0f)};
    ASSERT_FALSE(bool(writeSingleCheckpoint(singleCheckpointPath(directory),
                                            parameters, weights, moments,
                                            moments, progress)));
  }

  std::string directory;
  std::vector<ManifestParameter> parameters;
};

TEST_F(TrainingCheckpointTest, ReadsTheOneRankForm) {
  writeSingle(3, 1.5f);
  llvm::Expected<TrainingState> state =
      readTrainingCheckpoint(directory, parameters);
  ASSERT_TRUE(bool(state)) << llvm::toString(state.takeError());
  EXPECT_EQ(state->step, 3);
  EXPECT_EQ(state->dataPosition, 24u);
  EXPECT_EQ(state->weights[0], std::vector<float>(4, 1.5f));
}

// A committed shard set that says it is newer is tried first; when it
// cannot be read (its rank 1 file is missing), the older one-rank form is
// read instead, and nothing else.
TEST_F(TrainingCheckpointTest, FallsBackFromAnUnreadableNewerForm) {
  writeSingle(3, 1.5f);
  ASSERT_FALSE(bool(commitShardSet(directory, 9,
                                   {{"checkpoint.step-9.shard-0-of-2.safetensors",
                                     10, 1},
                                    {"checkpoint.step-9.shard-1-of-2.safetensors",
                                     10, 2}})));
  // commitShardSet removed the one-rank form: write it again, older.
  writeSingle(3, 1.5f);
  llvm::Expected<TrainingState> state =
      readTrainingCheckpoint(directory, parameters);
  ASSERT_TRUE(bool(state)) << llvm::toString(state.takeError());
  EXPECT_EQ(state->step, 3);
  EXPECT_EQ(state->weights[0], std::vector<float>(4, 1.5f));
}

TEST_F(TrainingCheckpointTest, SaysWhyNoFormCanBeRead) {
  llvm::Expected<TrainingState> none =
      readTrainingCheckpoint(directory, parameters);
  ASSERT_FALSE(bool(none));
  EXPECT_NE(llvm::toString(none.takeError()).find("no checkpoint to resume"),
            std::string::npos);
  // Only an unreadable shard set: the error says why it failed.
  ASSERT_FALSE(bool(commitShardSet(
      directory, 4, {{"checkpoint.step-4.shard-0-of-1.safetensors", 8, 0}})));
  llvm::Expected<TrainingState> broken =
      readTrainingCheckpoint(directory, parameters);
  ASSERT_FALSE(bool(broken));
  std::string message = llvm::toString(broken.takeError());
  EXPECT_NE(message.find("no readable checkpoint"), std::string::npos)
      << message;
}

// A 2-rank shard set read back one parameter at a time (what a rank of a
// run on another rank count does on resume): each parameter once, with its
// values and moments put back together from both ranks' pieces.
TEST_F(TrainingCheckpointTest, ReadsAShardSetOneParameterAtATime) {
  Manifest manifest;
  manifest.parameters = {{"a", {2, 3}, "normal", true, false},
                         {"b", {5}, "ones", false, false},
                         {"router", {2}, "normal", false, true}};
  manifest.shardUnits = {{"u0", 6, {"a"}, {0}},
                         {"u1", 16 + 2, {"b", "router"}, {0, 16}}};
  // The flat units: element j of unit u holds 100 u + j (moments: + 1000,
  // + 2000); the aux router's moments stay zero.
  std::vector<std::vector<float>> flat[3];
  for (auto [u, unit] : llvm::enumerate(manifest.shardUnits))
    for (int kind = 0; kind < 3; ++kind) {
      std::vector<float> &values = flat[kind].emplace_back(unit.elements);
      for (int64_t j = 0; j < unit.elements; ++j)
        values[j] = float(1000 * kind + 100 * u + j);
    }
  std::vector<std::vector<float>> pieces[2][2][3]; // rank, unit, kind
  std::vector<ShardFile> files;
  for (int rank = 0; rank < 2; ++rank) {
    std::vector<UnitShards> shards;
    for (auto [u, unit] : llvm::enumerate(manifest.shardUnits)) {
      int64_t shard = shardElements(unit.elements, 2);
      for (int kind = 0; kind < 3; ++kind) {
        std::vector<float> &piece = pieces[rank][u][kind].emplace_back(shard, 0.0f);
        for (int64_t j = 0; j < shard && rank * shard + j < unit.elements; ++j)
          piece[j] = flat[kind][u][rank * shard + j];
      }
      shards.push_back({pieces[rank][u][0].back(), pieces[rank][u][1].back(),
                        pieces[rank][u][2].back()});
    }
    CheckpointProgress progress;
    progress.step = 5;
    llvm::Expected<ShardFile> file = writeShardCheckpoint(
        directory, rank, 2, manifest, shards, progress);
    ASSERT_TRUE(bool(file)) << llvm::toString(file.takeError());
    files.push_back(*file);
  }
  ASSERT_FALSE(bool(commitShardSet(directory, 5, files)));
  std::vector<int> seen(3, 0);
  llvm::Expected<TrainingState> state = readTrainingCheckpointEach(
      directory, manifest.parameters,
      [&](size_t i, std::vector<float> &weights, std::vector<float> &m,
          std::vector<float> &v) {
        ++seen[i];
        size_t unit = i == 0 ? 0 : 1;
        int64_t offset = i == 2 ? 16 : 0;
        ASSERT_EQ(int64_t(weights.size()), manifest.parameters[i].numElements());
        for (size_t j = 0; j < weights.size(); ++j)
          EXPECT_EQ(weights[j], float(100 * unit + offset + j)) << i;
        if (manifest.parameters[i].auxRouter) {
          EXPECT_TRUE(m.empty());
          EXPECT_TRUE(v.empty());
          return;
        }
        for (size_t j = 0; j < weights.size(); ++j) {
          EXPECT_EQ(m[j], float(1000 + 100 * unit + offset + j)) << i;
          EXPECT_EQ(v[j], float(2000 + 100 * unit + offset + j)) << i;
        }
      });
  ASSERT_TRUE(bool(state)) << llvm::toString(state.takeError());
  EXPECT_EQ(state->step, 5);
  EXPECT_TRUE(state->weights.empty()); // nothing kept whole
  EXPECT_EQ(seen, std::vector<int>({1, 1, 1}));
}

} // namespace
