//===- MpiCommunicator.cpp - Collectives over MPI -------------------------===//
//
// The MPI plugin of momarun (lib/libmomarun-mpi.so, see Communicator.h).
// Non-blocking MPI collectives (MPI-3), completed by polling MPI_Test until
// the timeout: a blocking MPI call would wait forever on a stalled rank.
// Shards that do not divide the buffer evenly use the v-variants
// (Iallgatherv, Ireduce_scatter), so nothing is padded or copied.
//
//===----------------------------------------------------------------------===//

#include "runtime/comm/Communicator.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/FormatVariadic.h"

#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <thread>
#include <vector>

using namespace momac;

namespace {

llvm::Error mpiError(int code, llvm::StringRef what) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 "MPI: %s failed: %s", what.str().c_str(),
                                 std::string(text, length).c_str());
}

class MpiCommunicator;

class MpiPending : public PendingCollective {
public:
  MpiPending(const MpiCommunicator &comm, std::string what)
      : comm(comm), what(std::move(what)) {}
  ~MpiPending() override;
  llvm::Error wait() override;

  MPI_Request request = MPI_REQUEST_NULL;
  std::vector<int> counts, displacements;

private:
  const MpiCommunicator &comm;
  std::string what;
};

class MpiCommunicator : public Communicator {
public:
  MpiCommunicator(int rank, int size, std::chrono::milliseconds timeout)
      : Communicator(rank, size, timeout) {
    // Liveness pings travel on their own communicator, never matching a
    // collective's traffic.
    MPI_Comm_dup(MPI_COMM_WORLD, &pingComm);
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) {
      MPI_Comm_free(&pingComm);
      MPI_Finalize();
    }
  }
  llvm::StringRef backend() const override { return "mpi"; }

  /// Polls `request` until it completes or the timeout passes; spins at
  /// first, then sleeps a little between polls so that oversubscribed
  /// ranks leave the core to the one computing. While waiting, a rank
  /// answers the others' liveness pings; when its own wait times out, it
  /// pings every rank and names those that do not answer.
  llvm::Error complete(MPI_Request &request, llvm::StringRef what) const {
    auto deadline = std::chrono::steady_clock::now() + timeout();
    for (int polls = 0;; ++polls) {
      int done = 0;
      if (int code = MPI_Test(&request, &done, MPI_STATUS_IGNORE))
        return mpiError(code, what);
      if (done)
        return llvm::Error::success();
      if (polls > 1000) {
        answerPings();
        if (std::chrono::steady_clock::now() > deadline)
          return lostRanksError(what);
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
  }

private:
  static constexpr int kPingTag = 1, kPongTag = 2;

  void answerPings() const {
    for (;;) {
      int pending = 0;
      MPI_Status status;
      MPI_Iprobe(MPI_ANY_SOURCE, kPingTag, pingComm, &pending, &status);
      if (!pending)
        return;
      char byte;
      MPI_Recv(&byte, 1, MPI_CHAR, status.MPI_SOURCE, kPingTag, pingComm,
               MPI_STATUS_IGNORE);
      // A send buffer that outlives the freed request.
      static const char pong = 0;
      MPI_Request reply;
      MPI_Isend(&pong, 1, MPI_CHAR, status.MPI_SOURCE, kPongTag, pingComm,
                &reply);
      MPI_Request_free(&reply);
    }
  }

  /// The timeout error, naming the ranks that do not answer a ping within
  /// a few seconds (killed, stopped, or stuck outside any collective).
  llvm::Error lostRanksError(llvm::StringRef what) const {
    std::vector<MPI_Request> pongs;
    std::vector<int> peers;
    std::vector<char> bytes(size(), 0);
    static const char ping = 0;
    for (int r = 0; r < size(); ++r) {
      if (r == rank())
        continue;
      MPI_Request send, receive;
      MPI_Isend(&ping, 1, MPI_CHAR, r, kPingTag, pingComm, &send);
      MPI_Request_free(&send);
      MPI_Irecv(&bytes[r], 1, MPI_CHAR, r, kPongTag, pingComm, &receive);
      pongs.push_back(receive);
      peers.push_back(r);
    }
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    std::vector<bool> answered(peers.size(), false);
    while (std::chrono::steady_clock::now() < until &&
           !llvm::all_of(answered, [](bool a) { return a; })) {
      answerPings();
      for (size_t i = 0; i < pongs.size(); ++i) {
        int done = 0;
        if (!answered[i] &&
            MPI_Test(&pongs[i], &done, MPI_STATUS_IGNORE) == MPI_SUCCESS &&
            done)
          answered[i] = true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::string silent;
    for (size_t i = 0; i < peers.size(); ++i)
      if (!answered[i])
        silent += (silent.empty() ? "" : ", ") + std::to_string(peers[i]);
    llvm::Error base = timeoutError(what);
    if (silent.empty())
      return base;
    return llvm::createStringError(
        llvm::inconvertibleErrorCode(),
        llvm::toString(std::move(base)) + "; rank(s) " + silent +
            " do not answer (lost, stopped or stuck)");
  }

public:
  void shardCounts(size_t shardElements, size_t total, std::vector<int> &counts,
                   std::vector<int> &displacements) const {
    for (int r = 0; r < size(); ++r) {
      counts.push_back(int(ownedElements(shardElements, total, r)));
      displacements.push_back(
          int(std::min(total, size_t(r) * shardElements)));
    }
  }

  llvm::Expected<std::unique_ptr<PendingCollective>>
  startAllGather(const float *shard, float *full, size_t shardElements,
                 size_t total, llvm::StringRef what) override {
    if (total > size_t(std::numeric_limits<int>::max()))
      return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                     "%s: more than 2^31 elements",
                                     what.str().c_str());
    auto pending = std::make_unique<MpiPending>(*this, what.str());
    shardCounts(shardElements, total, pending->counts, pending->displacements);
    if (int code = MPI_Iallgatherv(
            shard, pending->counts[rank()], MPI_FLOAT, full,
            pending->counts.data(), pending->displacements.data(), MPI_FLOAT,
            MPI_COMM_WORLD, &pending->request))
      return mpiError(code, what);
    return pending;
  }

  llvm::Error reduceScatterSum(const float *full, float *shard,
                               size_t shardElements, size_t total,
                               llvm::StringRef what) override {
    std::vector<int> counts, displacements;
    shardCounts(shardElements, total, counts, displacements);
    MPI_Request request;
    if (int code = MPI_Ireduce_scatter(full, shard, counts.data(), MPI_FLOAT,
                                       MPI_SUM, MPI_COMM_WORLD, &request))
      return mpiError(code, what);
    if (llvm::Error error = complete(request, what))
      return error;
    std::fill(shard + counts[rank()], shard + shardElements, 0.0f);
    return llvm::Error::success();
  }

  llvm::Error allReduceSum(double *values, size_t count,
                           llvm::StringRef what) override {
    MPI_Request request;
    if (int code = MPI_Iallreduce(MPI_IN_PLACE, values, int(count), MPI_DOUBLE,
                                  MPI_SUM, MPI_COMM_WORLD, &request))
      return mpiError(code, what);
    return complete(request, what);
  }

  llvm::Error barrier(llvm::StringRef what) override {
    MPI_Request request;
    if (int code = MPI_Ibarrier(MPI_COMM_WORLD, &request))
      return mpiError(code, what);
    return complete(request, what);
  }

  llvm::Error broadcast(void *bytes, size_t size, int root,
                        llvm::StringRef what) override {
    MPI_Request request;
    if (int code = MPI_Ibcast(bytes, int(size), MPI_BYTE, root, MPI_COMM_WORLD,
                              &request))
      return mpiError(code, what);
    return complete(request, what);
  }

  [[noreturn]] void abort(int exitCode) override {
    MPI_Abort(MPI_COMM_WORLD, exitCode);
    std::exit(exitCode);
  }

private:
  MPI_Comm pingComm = MPI_COMM_NULL;
};

MpiPending::~MpiPending() {
  // A collective abandoned after an error: the process is ending anyway.
  if (request != MPI_REQUEST_NULL)
    MPI_Request_free(&request);
}

llvm::Error MpiPending::wait() { return comm.complete(request, what); }

} // namespace

/// The plugin's one entry point (Communicator.h, kMpiPluginEntry): this
/// process's rank of its MPI job, initializing MPI, or null with `error`
/// (`errorSize` bytes) saying why.
extern "C" __attribute__((visibility("default"))) Communicator *
momarun_mpi_communicator(int64_t timeoutMs, char *error, size_t errorSize) {
  auto fail = [&](llvm::Error failure) -> Communicator * {
    std::snprintf(error, errorSize, "%s",
                  llvm::toString(std::move(failure)).c_str());
    return nullptr;
  };
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    if (int code = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED,
                                   &provided))
      return fail(mpiError(code, "MPI_Init_thread"));
  }
  // Errors come back as codes, turned into messages naming the
  // collective, instead of MPI's default abort.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return new MpiCommunicator(rank, size, std::chrono::milliseconds(timeoutMs));
}
