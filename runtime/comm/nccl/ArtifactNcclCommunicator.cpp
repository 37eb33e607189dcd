//===- ArtifactNcclCommunicator.cpp - NCCL in a CUDA artifact ------------===//

#include "runtime/comm/nccl/ArtifactNcclCommunicator.h"

#include "llvm/Support/FormatVariadic.h"

#include <vector>

using namespace momac;

namespace {

/// Ordered on the step's stream: nothing to wait for here.
class StreamOrdered : public PendingCollective {
public:
  llvm::Error wait() override { return llvm::Error::success(); }
};

class ArtifactNcclCommunicator : public Communicator {
public:
  ArtifactNcclCommunicator(Communicator &bootstrap,
                           const NcclCalls &calls)
      : Communicator(bootstrap.rank(), bootstrap.size(), bootstrap.timeout()),
        bootstrap(bootstrap), calls(calls) {}
  ~ArtifactNcclCommunicator() override { calls.destroy(); }

  llvm::StringRef backend() const override { return "nccl"; }

  llvm::Expected<std::unique_ptr<PendingCollective>>
  startAllGather(const float *shard, float *full, size_t shardElements,
                 size_t total, llvm::StringRef what) override {
    calls.allGather(shard, full, int64_t(shardElements), int64_t(total));
    if (llvm::Error error = taken(what))
      return std::move(error);
    return std::make_unique<StreamOrdered>();
  }

  llvm::Error reduceScatterSum(const float *full, float *shard,
                               size_t shardElements, size_t total,
                               llvm::StringRef what) override {
    calls.reduceScatter(full, shard, int64_t(shardElements), int64_t(total));
    return taken(what);
  }

  llvm::Error allReduceSum(double *values, size_t count,
                           llvm::StringRef what) override {
    return bootstrap.allReduceSum(values, count, what);
  }
  llvm::Error barrier(llvm::StringRef what) override {
    return bootstrap.barrier(what);
  }
  llvm::Error broadcast(void *bytes, size_t size, int root,
                        llvm::StringRef what) override {
    return bootstrap.broadcast(bytes, size, root, what);
  }
  [[noreturn]] void abort(int exitCode) override { bootstrap.abort(exitCode); }

private:
  llvm::Error taken(llvm::StringRef what) {
    if (const char *error = calls.takeError())
      return llvm::createStringError(
          llvm::inconvertibleErrorCode(),
          llvm::formatv("rank {0} of {1}: {2} (NCCL): {3}", rank(), size(),
                        what, error)
              .str());
    return llvm::Error::success();
  }

  Communicator &bootstrap;
  NcclCalls calls;
};

llvm::Error ncclError(const Communicator &bootstrap, const llvm::Twine &what,
                      const char *why) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 llvm::formatv("rank {0} of {1}: {2}: {3}",
                                               bootstrap.rank(),
                                               bootstrap.size(), what.str(),
                                               why ? why : "unknown NCCL error")
                                     .str());
}

} // namespace

llvm::Expected<std::unique_ptr<Communicator>>
momac::createArtifactNcclCommunicator(Communicator &bootstrap,
                                      const NcclCalls &calls) {
  std::vector<char> id(size_t(calls.idBytes()));
  if (bootstrap.rank() == 0 && !calls.uniqueId(id.data()))
    return ncclError(bootstrap, "ncclGetUniqueId", calls.takeError());
  if (llvm::Error error = bootstrap.broadcast(id.data(), id.size(), 0,
                                              "the NCCL unique id broadcast"))
    return std::move(error);
  if (!calls.init(id.data(), bootstrap.rank(), bootstrap.size(),
                  int64_t(bootstrap.timeout().count())))
    return ncclError(bootstrap, "joining the NCCL communicator",
                     calls.takeError());
  return std::make_unique<ArtifactNcclCommunicator>(bootstrap, calls);
}
