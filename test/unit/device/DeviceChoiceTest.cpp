//===- DeviceChoiceTest.cpp - Which GPU a rank takes; launch limits -------===//

#include "runtime/device/cuda/DeviceChoice.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

using namespace momac::cuda;

namespace {

DeviceChoice choose(int devices, std::map<std::string, std::string> env) {
  return chooseDevice(devices, [&](const char *name) -> const char * {
    auto found = env.find(name);
    return found == env.end() ? nullptr : found->second.c_str();
  });
}

TEST(DeviceChoiceTest, WithoutARankTheFirstGpu) {
  DeviceChoice choice = choose(8, {});
  EXPECT_EQ(choice.ordinal, 0);
  EXPECT_TRUE(choice.reason.empty());
  EXPECT_TRUE(choice.error.empty());
}

// mpirun -np 4 on one machine of 8 GPUs: ranks take GPUs 0..3, not all 0.
TEST(DeviceChoiceTest, EachLocalRankItsOwnGpu) {
  for (int rank = 0; rank < 4; ++rank) {
    DeviceChoice choice =
        choose(8, {{"OMPI_COMM_WORLD_LOCAL_RANK", std::to_string(rank)}});
    EXPECT_EQ(choice.ordinal, rank);
    EXPECT_NE(choice.reason.find("OMPI_COMM_WORLD_LOCAL_RANK"),
              std::string::npos);
  }
  EXPECT_EQ(choose(2, {{"SLURM_LOCALID", "3"}}).ordinal, 1);
  EXPECT_EQ(choose(4, {{"LOCAL_RANK", "2"}}).ordinal, 2);
  // Open MPI's variable wins over the others; garbage is skipped.
  EXPECT_EQ(choose(8, {{"OMPI_COMM_WORLD_LOCAL_RANK", "5"},
                       {"LOCAL_RANK", "1"}})
                .ordinal,
            5);
  EXPECT_EQ(choose(8, {{"OMPI_COMM_WORLD_LOCAL_RANK", "x"},
                       {"LOCAL_RANK", "1"}})
                .ordinal,
            1);
}

TEST(DeviceChoiceTest, AnExplicitDeviceWinsAndIsChecked) {
  DeviceChoice choice = choose(
      4, {{"MOMA_CUDA_DEVICE", "3"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "1"}});
  EXPECT_EQ(choice.ordinal, 3);
  EXPECT_EQ(choice.reason, "MOMA_CUDA_DEVICE=3");
  for (const char *bad : {"4", "-1", "one", ""}) {
    DeviceChoice wrong = choose(4, {{"MOMA_CUDA_DEVICE", bad}});
    EXPECT_NE(wrong.error.find("expected a GPU index from 0 to 3"),
              std::string::npos)
        << bad << ": " << wrong.error;
  }
}

TEST(DeviceChoiceTest, LaunchLimits) {
  EXPECT_EQ(launchLimitError(1, 1, 1, 128, 1, 1), "");
  EXPECT_EQ(launchLimitError((int64_t(1) << 31) - 1, 65535, 65535, 1024, 1, 1),
            "");
  std::string y = launchLimitError(1, 65536, 1, 128, 1, 1);
  EXPECT_NE(y.find("grid 1x65536x1"), std::string::npos) << y;
  EXPECT_NE(launchLimitError(1, 1, 70000, 128, 1, 1), "");
  EXPECT_NE(launchLimitError(int64_t(1) << 31, 1, 1, 128, 1, 1), "");
  std::string block = launchLimitError(1, 1, 1, 512, 4, 1);
  EXPECT_NE(block.find("block 512x4x1"), std::string::npos) << block;
  EXPECT_NE(launchLimitError(1, 1, 1, 1, 1, 65), "");
}

} // namespace
