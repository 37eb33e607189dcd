//===- ArtifactNcclCommunicatorTest.cpp - NCCL through an artifact, faked -===//
//
// momarun's side of the NCCL a sharded CUDA artifact carries, without a GPU:
// the artifact's calls are fakes that record what they were asked. The id
// goes from rank 0 to the join, the units' collectives go to the artifact
// with their shapes (ordered by the stream: nothing to wait for), host
// values go over the bootstrap communicator, and an artifact error names
// the rank and the collective.
//
//===----------------------------------------------------------------------===//

#include "runtime/comm/nccl/ArtifactNcclCommunicator.h"

#include "gtest/gtest.h"

#include <cstring>
#include <string>
#include <vector>

using namespace momac;

namespace {

/// What the fake artifact was asked.
struct Recorded {
  std::string id;
  int joinedRank = -1, joinedRanks = -1;
  int64_t timeoutMs = 0;
  std::string joinedId;
  const float *gatherShard = nullptr;
  float *gatherFull = nullptr;
  int64_t shardElements = 0, total = 0;
  const float *scatterFull = nullptr;
  float *scatterShard = nullptr;
  const char *pendingError = nullptr;
  bool destroyed = false;
};
Recorded recorded;

NcclCalls fakeCalls() {
  NcclCalls calls;
  calls.idBytes = [] { return int64_t(16); };
  calls.uniqueId = [](void *id) {
    std::memcpy(id, "unique-id-bytes", 16);
    recorded.id = "unique-id-bytes";
    return true;
  };
  calls.init = [](const void *id, int32_t rank, int32_t ranks,
                  int64_t timeoutMs) {
    recorded.joinedId.assign(static_cast<const char *>(id), 15);
    recorded.joinedRank = rank;
    recorded.joinedRanks = ranks;
    recorded.timeoutMs = timeoutMs;
    return true;
  };
  calls.allGather = [](const float *shard, float *full, int64_t shardElements,
                       int64_t total) {
    recorded.gatherShard = shard;
    recorded.gatherFull = full;
    recorded.shardElements = shardElements;
    recorded.total = total;
  };
  calls.reduceScatter = [](const float *full, float *shard,
                           int64_t shardElements, int64_t total) {
    recorded.scatterFull = full;
    recorded.scatterShard = shard;
    recorded.shardElements = shardElements;
    recorded.total = total;
  };
  calls.destroy = [] { recorded.destroyed = true; };
  calls.takeError = [] {
    const char *error = recorded.pendingError;
    recorded.pendingError = nullptr;
    return error;
  };
  return calls;
}

class ArtifactNcclCommunicatorTest : public ::testing::Test {
protected:
  void SetUp() override {
    recorded = Recorded();
    bootstrap = createSingleRankCommunicator(std::chrono::milliseconds(1000));
  }
  std::unique_ptr<Communicator> bootstrap;
};

TEST_F(ArtifactNcclCommunicatorTest, JoinsWithTheIdOfRankZero) {
  NcclCalls calls = fakeCalls();
  auto comm = createArtifactNcclCommunicator(*bootstrap, calls);
  ASSERT_TRUE(bool(comm)) << llvm::toString(comm.takeError());
  EXPECT_EQ((*comm)->backend(), "nccl");
  EXPECT_EQ(recorded.id, "unique-id-bytes");
  EXPECT_EQ(recorded.joinedId, "unique-id-bytes");
  EXPECT_EQ(recorded.joinedRank, 0);
  EXPECT_EQ(recorded.joinedRanks, 1);
  // The artifact bounds its waits for the GPU by the run's timeout.
  EXPECT_EQ(recorded.timeoutMs, 1000);
  comm->reset();
  EXPECT_TRUE(recorded.destroyed);
}

TEST_F(ArtifactNcclCommunicatorTest, UnitCollectivesGoToTheArtifact) {
  NcclCalls calls = fakeCalls();
  auto comm = createArtifactNcclCommunicator(*bootstrap, calls);
  ASSERT_TRUE(bool(comm)) << llvm::toString(comm.takeError());
  std::vector<float> shard(8), full(13);
  auto pending = (*comm)->startAllGather(shard.data(), full.data(), 8, 13,
                                         "all-gather of unit layers.0");
  ASSERT_TRUE(bool(pending)) << llvm::toString(pending.takeError());
  EXPECT_EQ(recorded.gatherShard, shard.data());
  EXPECT_EQ(recorded.gatherFull, full.data());
  EXPECT_EQ(recorded.shardElements, 8);
  EXPECT_EQ(recorded.total, 13);
  // Ordered by the step's stream: the wait has nothing to do.
  EXPECT_FALSE(bool((*pending)->wait()));
  EXPECT_FALSE(bool((*comm)->reduceScatterSum(full.data(), shard.data(), 8, 13,
                                              "reduce-scatter")));
  EXPECT_EQ(recorded.scatterFull, full.data());
  EXPECT_EQ(recorded.scatterShard, shard.data());
  // Host values go over the bootstrap communicator.
  std::vector<double> sums = {1.5, 2.5};
  EXPECT_FALSE(bool((*comm)->allReduceSum(sums.data(), 2, "sums")));
  EXPECT_EQ(sums[1], 2.5);
}

TEST_F(ArtifactNcclCommunicatorTest, AnArtifactErrorNamesTheRankAndWhat) {
  NcclCalls calls = fakeCalls();
  auto comm = createArtifactNcclCommunicator(*bootstrap, calls);
  ASSERT_TRUE(bool(comm)) << llvm::toString(comm.takeError());
  std::vector<float> shard(4), full(4);
  recorded.pendingError = "NCCL: ncclAllGather failed: unhandled system error";
  auto pending = (*comm)->startAllGather(shard.data(), full.data(), 4, 4,
                                         "all-gather of unit norm.weight");
  ASSERT_FALSE(bool(pending));
  std::string message = llvm::toString(pending.takeError());
  EXPECT_NE(message.find("rank 0 of 1"), std::string::npos) << message;
  EXPECT_NE(message.find("all-gather of unit norm.weight"), std::string::npos)
      << message;
  EXPECT_NE(message.find("unhandled system error"), std::string::npos)
      << message;
}

TEST_F(ArtifactNcclCommunicatorTest, AFailedJoinSaysWhy) {
  NcclCalls calls = fakeCalls();
  calls.init = [](const void *, int32_t, int32_t, int64_t) {
    recorded.pendingError = "NCCL: ncclCommInitRank failed: invalid argument";
    return false;
  };
  auto comm = createArtifactNcclCommunicator(*bootstrap, calls);
  ASSERT_FALSE(bool(comm));
  std::string message = llvm::toString(comm.takeError());
  EXPECT_NE(message.find("joining the NCCL communicator"), std::string::npos)
      << message;
  EXPECT_NE(message.find("invalid argument"), std::string::npos) << message;
}

} // namespace
