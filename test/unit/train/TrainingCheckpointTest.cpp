//===- TrainingCheckpointTest.cpp - Which checkpoint form resume reads ----===//

#include "runtime/train/TrainingCheckpoint.h"

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

// A shard set whose header says it is newer is tried first; when it cannot
// be read (its rank 1 file is missing: a crash while writing it), the older
// one-rank form is read instead, and nothing else.
TEST_F(TrainingCheckpointTest, FallsBackFromAnUnreadableNewerForm) {
  writeSingle(3, 1.5f);
  // Rank 0's file of a 2-rank set, at step 9 by its header.
  CheckpointProgress newer;
  newer.step = 9;
  newer.dataPosition = 72;
  std::vector<std::vector<float>> weights = {std::vector<float>(4, 7.0f)},
                                  moments = {std::vector<float>(4, 0.0f)};
  ASSERT_FALSE(bool(writeSingleCheckpoint(
      shardCheckpointPath(directory, 0, 2), parameters, weights, moments,
      moments, newer)));
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
  CheckpointProgress progress;
  progress.step = 4;
  std::vector<std::vector<float>> weights = {std::vector<float>(4, 1.0f)},
                                  moments = {std::vector<float>(4, 0.0f)};
  ASSERT_FALSE(bool(writeSingleCheckpoint(shardCheckpointPath(directory, 0, 2),
                                          parameters, weights, moments,
                                          moments, progress)));
  llvm::Expected<TrainingState> broken =
      readTrainingCheckpoint(directory, parameters);
  ASSERT_FALSE(bool(broken));
  std::string message = llvm::toString(broken.takeError());
  EXPECT_NE(message.find("no readable checkpoint"), std::string::npos)
      << message;
}

} // namespace
