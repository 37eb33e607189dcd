//===- CommunicatorTest.cpp - Collectives on any number of ranks ----------===//
//
// Run alone, the process is one rank (no MPI); ctest also runs it under
// `mpirun -np 2` (comm-mpi-2-ranks), where every test's collectives go
// between the two processes, with shards that do not divide the buffers.
//
//===----------------------------------------------------------------------===//

#include "runtime/comm/Communicator.h"

#include "gtest/gtest.h"

#include <cstdlib>
#include <numeric>
#include <vector>

using namespace momac;

namespace {

Communicator &processCommunicator() {
  static std::unique_ptr<Communicator> comm = [] {
    auto created = createProcessCommunicator(std::chrono::milliseconds(30000));
    if (!created) {
      ADD_FAILURE() << llvm::toString(created.takeError());
      return createSingleRankCommunicator(std::chrono::milliseconds(30000));
    }
    return std::move(*created);
  }();
  return *comm;
}

// Under an MPI launcher without the plugin, the error says what is missing
// and that one rank needs no MPI (a run on the GPU bundle's machine).
TEST(CommunicatorTest, MissingMpiPluginIsAnError) {
  if (launchedByMpiLauncher())
    GTEST_SKIP() << "the MPI plugin is in use";
  ::setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
  ::setenv("MOMARUN_MPI_PLUGIN", "/nonexistent/libmomarun-mpi.so", 1);
  auto created = createProcessCommunicator(std::chrono::milliseconds(1000));
  ::unsetenv("OMPI_COMM_WORLD_SIZE");
  ::unsetenv("MOMARUN_MPI_PLUGIN");
  ASSERT_FALSE(bool(created));
  std::string message = llvm::toString(created.takeError());
  EXPECT_NE(message.find("/nonexistent/libmomarun-mpi.so"), std::string::npos)
      << message;
  EXPECT_NE(message.find("start momarun without mpirun"), std::string::npos)
      << message;
}

TEST(CommunicatorTest, OwnedElementsCoverTheBufferOnce) {
  // 10 elements in shards of 4 over 3 ranks: 4, 4, 2; over 4 ranks the
  // last owns nothing.
  EXPECT_EQ(Communicator::ownedElements(4, 10, 0), 4u);
  EXPECT_EQ(Communicator::ownedElements(4, 10, 2), 2u);
  EXPECT_EQ(Communicator::ownedElements(4, 10, 3), 0u);
  EXPECT_EQ(Communicator::ownedElements(16, 10, 0), 10u);
}

TEST(CommunicatorTest, AllGatherPutsEveryShardInPlace) {
  Communicator &comm = processCommunicator();
  const size_t total = 1001, shard = (total + comm.size() - 1) / comm.size();
  std::vector<float> full(total, -1.0f), mine(shard, 0.0f);
  size_t begin = std::min(total, comm.rank() * shard);
  for (size_t i = 0; i < Communicator::ownedElements(shard, total, comm.rank());
       ++i)
    mine[i] = float(begin + i);
  auto pending =
      comm.startAllGather(mine.data(), full.data(), shard, total, "test");
  ASSERT_TRUE(bool(pending)) << llvm::toString(pending.takeError());
  ASSERT_FALSE(bool((*pending)->wait()));
  for (size_t i = 0; i < total; ++i)
    ASSERT_EQ(full[i], float(i)) << "element " << i;
}

TEST(CommunicatorTest, ReduceScatterSumsTheRanksPieces) {
  Communicator &comm = processCommunicator();
  // A padded, uneven split: ceil(37 / ranks) rounded up to 16.
  const size_t total = 37,
               shard = ((total + comm.size() - 1) / comm.size() + 15) & ~size_t(15);
  std::vector<float> full(total);
  for (size_t i = 0; i < total; ++i)
    full[i] = float(i) * float(comm.rank() + 1);
  std::vector<float> mine(shard, 7.0f);
  ASSERT_FALSE(bool(
      comm.reduceScatterSum(full.data(), mine.data(), shard, total, "test")));
  const float ranksSum = float(comm.size() * (comm.size() + 1) / 2);
  size_t begin = std::min(total, comm.rank() * shard);
  size_t owned = Communicator::ownedElements(shard, total, comm.rank());
  for (size_t i = 0; i < owned; ++i)
    EXPECT_EQ(mine[i], float(begin + i) * ranksSum);
  for (size_t i = owned; i < shard; ++i)
    EXPECT_EQ(mine[i], 0.0f) << "the padding is zeroed";
}

TEST(CommunicatorTest, AllReduceBroadcastAndBarrier) {
  Communicator &comm = processCommunicator();
  std::vector<double> values{1.0, double(comm.rank())};
  ASSERT_FALSE(bool(comm.allReduceSum(values.data(), 2, "test")));
  EXPECT_EQ(values[0], double(comm.size()));
  EXPECT_EQ(values[1], double(comm.size() * (comm.size() - 1) / 2));
  int root = comm.size() - 1;
  int64_t value = comm.rank() == root ? 4242 : 0;
  ASSERT_FALSE(bool(comm.broadcast(&value, sizeof(value), root, "test")));
  EXPECT_EQ(value, 4242);
  EXPECT_FALSE(bool(comm.barrier("test")));
}

} // namespace
