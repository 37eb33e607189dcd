//===- DeviceChoice.cpp - Which GPU, and whether a launch fits it ---------===//

#include "runtime/device/cuda/DeviceChoice.h"

#include <cerrno>
#include <cstdlib>

using namespace momac::cuda;

namespace {

/// A non-negative decimal integer, or -1.
long parseIndex(const char *text) {
  if (!text || !*text)
    return -1;
  char *end = nullptr;
  errno = 0;
  long value = std::strtol(text, &end, 10);
  if (errno || *end || value < 0)
    return -1;
  return value;
}

} // namespace

DeviceChoice momac::cuda::chooseDevice(
    int deviceCount, const std::function<const char *(const char *)> &getenv) {
  DeviceChoice choice;
  if (const char *explicitDevice = getenv("MOMA_CUDA_DEVICE")) {
    long index = parseIndex(explicitDevice);
    if (index < 0 || index >= deviceCount) {
      choice.error = std::string("MOMA_CUDA_DEVICE=") + explicitDevice +
                     ": expected a GPU index from 0 to " +
                     std::to_string(deviceCount - 1) + " (" +
                     std::to_string(deviceCount) + " visible)";
      return choice;
    }
    choice.ordinal = int(index);
    choice.reason = std::string("MOMA_CUDA_DEVICE=") + explicitDevice;
    return choice;
  }
  for (const char *variable : kLocalRankVariables) {
    long rank = parseIndex(getenv(variable));
    if (rank < 0)
      continue;
    choice.ordinal = int(rank % deviceCount);
    choice.reason = "node-local rank " + std::to_string(rank) + " (" +
                    variable + ") of " + std::to_string(deviceCount) +
                    " visible GPU(s)";
    return choice;
  }
  return choice;
}

std::string momac::cuda::launchLimitError(int64_t gridX, int64_t gridY,
                                          int64_t gridZ, int64_t blockX,
                                          int64_t blockY, int64_t blockZ) {
  constexpr int64_t kMaxGridX = (int64_t(1) << 31) - 1;
  constexpr int64_t kMaxGridYZ = 65535;
  constexpr int64_t kMaxBlockXY = 1024, kMaxBlockZ = 64, kMaxThreads = 1024;
  auto dims = [](int64_t x, int64_t y, int64_t z) {
    return std::to_string(x) + "x" + std::to_string(y) + "x" +
           std::to_string(z);
  };
  if (gridX > kMaxGridX || gridY > kMaxGridYZ || gridZ > kMaxGridYZ)
    return "grid " + dims(gridX, gridY, gridZ) +
           " exceeds the GPU's limits (x at most 2^31 - 1 blocks, y and z "
           "at most 65535)";
  if (blockX < 1 || blockY < 1 || blockZ < 1 || blockX > kMaxBlockXY ||
      blockY > kMaxBlockXY || blockZ > kMaxBlockZ ||
      blockX * blockY * blockZ > kMaxThreads)
    return "block " + dims(blockX, blockY, blockZ) +
           " exceeds the GPU's limits (at most 1024 threads, z at most 64)";
  return "";
}
