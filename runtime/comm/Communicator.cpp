//===- Communicator.cpp - Collectives between the ranks of a run ----------===//

#include "runtime/comm/Communicator.h"

#include "llvm/Support/DynamicLibrary.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

using namespace momac;

PendingCollective::~PendingCollective() = default;
Communicator::~Communicator() = default;

size_t Communicator::ownedElements(size_t shardElements, size_t total,
                                   int rank) {
  size_t begin = std::min(total, size_t(rank) * shardElements);
  return std::min(total, begin + shardElements) - begin;
}

llvm::Error Communicator::timeoutError(llvm::StringRef what) const {
  return llvm::createStringError(
      llvm::inconvertibleErrorCode(),
      llvm::formatv("rank {0} of {1}: {2} did not complete within {3} s: "
                    "another rank is lost or stalled (--comm-timeout sets "
                    "the limit)",
                    rank(), size(), what, timeout().count() / 1000.0)
          .str());
}

bool momac::launchedByMpiLauncher() {
  for (const char *variable :
       {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(variable))
      return true;
  return false;
}

namespace {

class CompletedCollective : public PendingCollective {
public:
  llvm::Error wait() override { return llvm::Error::success(); }
};

/// One rank: every collective is a copy.
class SingleRankCommunicator : public Communicator {
public:
  explicit SingleRankCommunicator(std::chrono::milliseconds timeout)
      : Communicator(0, 1, timeout) {}
  llvm::StringRef backend() const override { return "single process"; }

  llvm::Expected<std::unique_ptr<PendingCollective>>
  startAllGather(const float *shard, float *full, size_t, size_t total,
                 llvm::StringRef) override {
    if (shard != full)
      std::memmove(full, shard, total * sizeof(float));
    return std::make_unique<CompletedCollective>();
  }
  llvm::Error reduceScatterSum(const float *full, float *shard,
                               size_t shardElements, size_t total,
                               llvm::StringRef) override {
    if (shard != full)
      std::memmove(shard, full, total * sizeof(float));
    std::fill(shard + total, shard + shardElements, 0.0f);
    return llvm::Error::success();
  }
  llvm::Error allReduceSum(double *, size_t, llvm::StringRef) override {
    return llvm::Error::success();
  }
  llvm::Error barrier(llvm::StringRef) override {
    return llvm::Error::success();
  }
  llvm::Error broadcast(void *, size_t, int, llvm::StringRef) override {
    return llvm::Error::success();
  }
  [[noreturn]] void abort(int exitCode) override { std::exit(exitCode); }
};

} // namespace

std::unique_ptr<Communicator>
momac::createSingleRankCommunicator(std::chrono::milliseconds timeout) {
  return std::make_unique<SingleRankCommunicator>(timeout);
}

std::string momac::mpiPluginPath() {
  if (const char *path = std::getenv("MOMARUN_MPI_PLUGIN"))
    return path;
  // bin/momarun -> lib/libmomarun-mpi.so, in the build tree as installed.
  llvm::SmallString<256> path(llvm::sys::fs::getMainExecutable(
      nullptr, reinterpret_cast<void *>(&momac::mpiPluginPath)));
  llvm::sys::path::remove_filename(path);
  llvm::sys::path::append(path, "..", "lib", "libmomarun-mpi.so");
  return std::string(path);
}

llvm::Expected<std::unique_ptr<Communicator>>
momac::createProcessCommunicator(std::chrono::milliseconds timeout) {
  if (!launchedByMpiLauncher())
    return createSingleRankCommunicator(timeout);
  std::string path = mpiPluginPath(), error;
  auto fail = [&](const llvm::Twine &why) {
    return llvm::createStringError(
        llvm::inconvertibleErrorCode(),
        "an MPI launcher started this process, but momarun's MPI support " +
            why + " (several ranks need it; a run on one GPU or CPU does "
            "not: start momarun without mpirun)");
  };
  llvm::sys::DynamicLibrary plugin =
      llvm::sys::DynamicLibrary::getPermanentLibrary(path.c_str(), &error);
  if (!plugin.isValid())
    return fail("cannot be loaded: " + error);
  using Create = Communicator *(*)(int64_t, char *, size_t);
  auto create =
      reinterpret_cast<Create>(plugin.getAddressOfSymbol(kMpiPluginEntry));
  if (!create)
    return fail(path + " has no " + kMpiPluginEntry);
  char message[512] = {0};
  Communicator *comm = create(timeout.count(), message, sizeof(message));
  if (!comm)
    return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
  return std::unique_ptr<Communicator>(comm);
}
