//===- DeviceChoice.h - Which GPU, and whether a launch fits it -*- C++ -*-===//
//
// What the CUDA runtime decides before it asks the driver, as plain
// functions of their inputs so that they are unit-tested without a GPU
// (test/unit/device/DeviceChoiceTest.cpp):
//
// - which of a node's GPUs this process uses: MOMA_CUDA_DEVICE when set,
//   otherwise its node-local rank (mpirun, srun, torchrun set it) modulo the
//   GPUs it sees, so that R ranks on one machine take R different GPUs
//   instead of all sharing GPU 0;
// - whether a kernel's grid and block fit the hardware's limits (x up to
//   2^31 - 1 blocks, y and z up to 65,535, at most 1,024 threads a block),
//   which the driver would otherwise reject with a bare "invalid value".
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_DEVICE_CUDA_DEVICECHOICE_H
#define MOMAC_RUNTIME_DEVICE_CUDA_DEVICECHOICE_H

#include <cstdint>
#include <functional>
#include <string>

namespace momac::cuda {

/// The environment variables a launcher sets to a process's rank among
/// those on its machine, in the order they are consulted.
inline constexpr const char *kLocalRankVariables[] = {
    "OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID",
    "LOCAL_RANK", "PMI_LOCAL_RANK"};

struct DeviceChoice {
  int ordinal = 0;
  /// Why that one ("MOMA_CUDA_DEVICE=1", "node-local rank 3 of 4 GPUs");
  /// empty for the default, GPU 0 of a process without a rank.
  std::string reason;
  /// Set when the choice is impossible (MOMA_CUDA_DEVICE out of range or
  /// not a number): the device is then unusable, and this says why.
  std::string error;
};

/// Chooses among `deviceCount` GPUs (>= 1) from the environment, read
/// through `getenv` (the process's own in the runtime, a table in tests).
DeviceChoice
chooseDevice(int deviceCount,
             const std::function<const char *(const char *)> &getenv);

/// Empty when a launch of `grid` blocks of `block` threads fits; otherwise
/// the limit it breaks, in words.
std::string launchLimitError(int64_t gridX, int64_t gridY, int64_t gridZ,
                             int64_t blockX, int64_t blockY, int64_t blockZ);

} // namespace momac::cuda

#endif // MOMAC_RUNTIME_DEVICE_CUDA_DEVICECHOICE_H
