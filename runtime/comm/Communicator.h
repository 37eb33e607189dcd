//===- Communicator.h - Collectives between the ranks of a run --*- C++ -*-===//
//
// One interface for the collectives FSDP needs, with implementations on real
// engines: MPI between CPU processes (mpi/, a plugin loaded only when an MPI
// launcher started the process), NCCL between GPUs (nccl/, through a CUDA
// artifact), and a single rank that needs neither.
//
// Shards: a buffer of `total` elements is split among the ranks in pieces of
// `shardElements`, rank r owning [r * shardElements, min((r + 1) *
// shardElements, total)); the last pieces may be short or empty, and a
// rank's shard buffer always has room for shardElements.
//
// Nothing waits forever: a collective that has not completed after the
// communicator's timeout is an error naming it and the rank that gave up
// (the other ranks are lost or stalled). A rank that dies is reported by the
// launcher (mpirun names it and stops the others).
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_COMM_COMMUNICATOR_H
#define MOMAC_RUNTIME_COMM_COMMUNICATOR_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

namespace momac {

/// A collective that was started and not yet waited for.
class PendingCollective {
public:
  virtual ~PendingCollective();
  /// Blocks until it completes, or the communicator's timeout passes.
  virtual llvm::Error wait() = 0;
};

class Communicator {
public:
  virtual ~Communicator();

  int rank() const { return rankIndex; }
  int size() const { return worldSize; }
  /// "mpi", "nccl" or "single process".
  virtual llvm::StringRef backend() const = 0;

  /// Starts gathering every rank's shard into `full` (`total` elements).
  virtual llvm::Expected<std::unique_ptr<PendingCollective>>
  startAllGather(const float *shard, float *full, size_t shardElements,
                 size_t total, llvm::StringRef what) = 0;
  /// Sums the ranks' `full` buffers and leaves in `shard` this rank's piece
  /// of the sum (the rest of `shard`, past `total`, is zeroed).
  virtual llvm::Error reduceScatterSum(const float *full, float *shard,
                                       size_t shardElements, size_t total,
                                       llvm::StringRef what) = 0;
  /// Sums `values` over the ranks, in place (host memory).
  virtual llvm::Error allReduceSum(double *values, size_t count,
                                   llvm::StringRef what) = 0;
  virtual llvm::Error barrier(llvm::StringRef what) = 0;
  /// Rank `root`'s bytes to every rank (host memory).
  virtual llvm::Error broadcast(void *bytes, size_t size, int root,
                                llvm::StringRef what) = 0;
  /// Ends every rank's process (MPI_Abort): for errors that leave the other
  /// ranks waiting in a collective.
  [[noreturn]] virtual void abort(int exitCode) = 0;

  std::chrono::milliseconds timeout() const { return timeoutLimit; }

  /// Elements of [0, total) that rank `rank` owns with shards of
  /// `shardElements`.
  static size_t ownedElements(size_t shardElements, size_t total, int rank);

protected:
  Communicator(int rank, int size, std::chrono::milliseconds timeout)
      : rankIndex(rank), worldSize(size), timeoutLimit(timeout) {}
  /// "rank R of N: <what> did not complete within T s: ..."
  llvm::Error timeoutError(llvm::StringRef what) const;

private:
  int rankIndex;
  int worldSize;
  std::chrono::milliseconds timeoutLimit;
};

/// True when this process was started by an MPI launcher (mpirun, mpiexec,
/// srun with PMI): then it is one rank of several.
bool launchedByMpiLauncher();

/// The communicator between this process and the others of its MPI job
/// (initializing MPI), or a single rank when no MPI launcher started it.
/// MPI comes from the plugin lib/libmomarun-mpi.so beside the executable's
/// bin/ (or MOMARUN_MPI_PLUGIN), loaded only then: a one-rank run needs no
/// MPI library at all.
llvm::Expected<std::unique_ptr<Communicator>>
createProcessCommunicator(std::chrono::milliseconds timeout);

/// The plugin's entry point: `Communicator *(int64_t timeoutMs, char
/// *error, size_t errorSize)`, null with `error` filled on failure.
constexpr const char *kMpiPluginEntry = "momarun_mpi_communicator";

/// Where createProcessCommunicator looks for the MPI plugin.
std::string mpiPluginPath();

/// A communicator of one rank, for runs without MPI.
std::unique_ptr<Communicator>
createSingleRankCommunicator(std::chrono::milliseconds timeout);

} // namespace momac

#endif // MOMAC_RUNTIME_COMM_COMMUNICATOR_H
