//===- NcclCheck.cpp - The NCCL communicator on real GPUs -----------------===//
//
// momac-nccl-check: run alone (one rank) or under mpirun (one GPU per
// rank), it all-gathers and reduce-scatters device buffers of uneven
// shards through NcclCommunicator and checks every element. Run by
// scripts/gpu-check.sh where a GPU is; exits 0 when all match.
//
//===----------------------------------------------------------------------===//

#include "runtime/comm/nccl/NcclCommunicator.h"

#include "llvm/Support/raw_ostream.h"

#include <cuda_runtime.h>

#include <vector>

using namespace momac;

static int fail(llvm::Error error) {
  llvm::errs() << "momac-nccl-check: " << llvm::toString(std::move(error))
               << "\n";
  return 1;
}

int main() {
  auto timeout = std::chrono::milliseconds(60000);
  llvm::Expected<std::unique_ptr<Communicator>> bootstrap =
      createProcessCommunicator(timeout);
  if (!bootstrap)
    return fail(bootstrap.takeError());
  int devices = 0;
  cudaGetDeviceCount(&devices);
  if (devices == 0) {
    llvm::errs() << "momac-nccl-check: no GPU\n";
    return 1;
  }
  const int rank = (*bootstrap)->rank(), ranks = (*bootstrap)->size();
  llvm::Expected<std::unique_ptr<Communicator>> nccl =
      createNcclCommunicator(**bootstrap, rank % devices);
  if (!nccl)
    return fail(nccl.takeError());
  const size_t total = 1000003, shardElements = (total + ranks - 1) / ranks;
  std::vector<float> host(total);
  for (size_t i = 0; i < total; ++i)
    host[i] = float(i % 1000);
  float *full = nullptr, *shard = nullptr;
  cudaMalloc(&full, total * sizeof(float));
  cudaMalloc(&shard, shardElements * sizeof(float));
  size_t begin = std::min(total, size_t(rank) * shardElements);
  size_t owned = Communicator::ownedElements(shardElements, total, rank);
  cudaMemcpy(shard, host.data() + begin, owned * sizeof(float),
             cudaMemcpyHostToDevice);
  auto pending =
      (*nccl)->startAllGather(shard, full, shardElements, total, "all-gather");
  if (!pending)
    return fail(pending.takeError());
  if (llvm::Error error = (*pending)->wait())
    return fail(std::move(error));
  std::vector<float> back(total);
  cudaMemcpy(back.data(), full, total * sizeof(float), cudaMemcpyDeviceToHost);
  if (back != host) {
    llvm::errs() << "momac-nccl-check: the all-gather differs\n";
    return 1;
  }
  if (llvm::Error error = (*nccl)->reduceScatterSum(full, shard, shardElements,
                                                    total, "reduce-scatter"))
    return fail(std::move(error));
  std::vector<float> mine(owned);
  cudaMemcpy(mine.data(), shard, owned * sizeof(float), cudaMemcpyDeviceToHost);
  for (size_t i = 0; i < owned; ++i)
    if (mine[i] != float(ranks) * host[begin + i]) {
      llvm::errs() << "momac-nccl-check: the reduce-scatter differs at " << i
                   << "\n";
      return 1;
    }
  double sum = rank + 1;
  if (llvm::Error error = (*nccl)->allReduceSum(&sum, 1, "all-reduce"))
    return fail(std::move(error));
  if (sum != ranks * (ranks + 1) / 2.0) {
    llvm::errs() << "momac-nccl-check: the all-reduce differs\n";
    return 1;
  }
  llvm::outs() << "momac-nccl-check: rank " << rank << " of " << ranks
               << ": NCCL all-gather, reduce-scatter and all-reduce match\n";
  return 0;
}
