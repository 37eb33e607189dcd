//===- CpuRuntime.h - What a CPU artifact links -----------------*- C++ -*-===//
//
// Two targets run their step on this machine's CPU: the CPU target and the
// CUDA target's emulation on the host (momac --target=cuda-emulated). Both
// link the same runtime, which lives here so that neither target's folder
// depends on the other's.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_COMPILER_TARGET_COMMON_CPURUNTIME_H
#define MOMAC_COMPILER_TARGET_COMMON_CPURUNTIME_H

#include <string>
#include <vector>

namespace momac {

/// What a model.so whose step runs on the CPU links besides its objects:
/// the CPU runtime archive, OpenMP, OpenBLAS, oneDNN, MLIR's C runner
/// utilities.
std::vector<std::string> cpuLinkArguments();

} // namespace momac

#endif // MOMAC_COMPILER_TARGET_COMMON_CPURUNTIME_H
