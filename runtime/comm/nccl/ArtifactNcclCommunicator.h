//===- ArtifactNcclCommunicator.h - NCCL in a CUDA artifact -----*- C++ -*-===//
//
// The Communicator of GPU ranks training an --fsdp CUDA artifact. NCCL
// lives in the artifact's model.so (runtime/device/cuda/NcclCollectives.cpp),
// as the rest of the CUDA runtime does, so momarun needs no CUDA: the
// gathers and reduce-scatters of a unit are NCCL calls on the step's
// stream, which orders them with the step's kernels (a started gather needs
// no wait of its own). Sums, barriers and broadcasts of host values go over
// `bootstrap` (the MPI communicator of the same job), and so does NCCL's
// unique id, from rank 0. Every wait for the device is then bounded by the
// communicator's timeout: a lost rank aborts NCCL and is an error.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_COMM_NCCL_ARTIFACTNCCLCOMMUNICATOR_H
#define MOMAC_RUNTIME_COMM_NCCL_ARTIFACTNCCLCOMMUNICATOR_H

#include "runtime/comm/Communicator.h"
#include "runtime/comm/nccl/NcclCalls.h"

namespace momac {

/// NCCL between the ranks of `bootstrap`, through the calls of an --fsdp
/// CUDA artifact (NcclCalls.h); from then on the artifact's waits for the
/// GPU are bounded by bootstrap's timeout.
llvm::Expected<std::unique_ptr<Communicator>>
createArtifactNcclCommunicator(Communicator &bootstrap,
                               const NcclCalls &calls);

} // namespace momac

#endif // MOMAC_RUNTIME_COMM_NCCL_ARTIFACTNCCLCOMMUNICATOR_H
