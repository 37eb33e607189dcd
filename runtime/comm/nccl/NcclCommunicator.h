//===- NcclCommunicator.h - Collectives between GPUs over NCCL --*- C++ -*-===//
//
// The Communicator of GPU ranks: NCCL collectives on device memory, on one
// stream, one GPU per rank. The NCCL unique id goes from rank 0 to the
// others over `bootstrap` (the MPI communicator of the same job). Waits poll
// the stream and NCCL's asynchronous error until the timeout, then abort the
// NCCL communicator, so a lost rank is an error and not a hang. Host-memory
// collectives (allReduceSum, broadcast) are staged through the device.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_COMM_NCCL_NCCLCOMMUNICATOR_H
#define MOMAC_RUNTIME_COMM_NCCL_NCCLCOMMUNICATOR_H

#include "runtime/comm/Communicator.h"

namespace momac {

/// NCCL between the ranks of `bootstrap`, rank r on GPU `device`.
llvm::Expected<std::unique_ptr<Communicator>>
createNcclCommunicator(Communicator &bootstrap, int device);

} // namespace momac

#endif // MOMAC_RUNTIME_COMM_NCCL_NCCLCOMMUNICATOR_H
