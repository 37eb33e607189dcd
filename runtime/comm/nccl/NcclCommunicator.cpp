//===- NcclCommunicator.cpp - Collectives between GPUs over NCCL ----------===//

#include "runtime/comm/nccl/NcclCommunicator.h"

#include "llvm/Support/FormatVariadic.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdlib>
#include <thread>

using namespace momac;

namespace {

llvm::Error cudaFailure(cudaError_t code, llvm::StringRef what) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 "CUDA: %s failed: %s", what.str().c_str(),
                                 cudaGetErrorString(code));
}

llvm::Error ncclFailure(ncclResult_t code, llvm::StringRef what) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 "NCCL: %s failed: %s", what.str().c_str(),
                                 ncclGetErrorString(code));
}

#define RETURN_IF_CUDA(call, what)                                             \
  if (cudaError_t code_ = (call); code_ != cudaSuccess)                        \
    return cudaFailure(code_, what);
#define RETURN_IF_NCCL(call, what)                                             \
  if (ncclResult_t code_ = (call); code_ != ncclSuccess)                       \
    return ncclFailure(code_, what);

class NcclCommunicator;

class NcclPending : public PendingCollective {
public:
  NcclPending(NcclCommunicator &comm, cudaEvent_t done, std::string what,
              float *staged, float *full, size_t total)
      : comm(comm), done(done), what(std::move(what)), staged(staged),
        full(full), total(total) {}
  ~NcclPending() override;
  llvm::Error wait() override;

private:
  NcclCommunicator &comm;
  cudaEvent_t done;
  std::string what;
  /// The padded receive buffer of an uneven all-gather, copied into `full`.
  float *staged;
  float *full;
  size_t total;
};

class NcclCommunicator : public Communicator {
public:
  NcclCommunicator(Communicator &bootstrap, ncclComm_t comm,
                   cudaStream_t stream)
      : Communicator(bootstrap.rank(), bootstrap.size(), bootstrap.timeout()),
        bootstrap(bootstrap), comm(comm), stream(stream) {}
  ~NcclCommunicator() override {
    ncclCommDestroy(comm);
    cudaStreamDestroy(stream);
  }
  llvm::StringRef backend() const override { return "nccl"; }

  /// Polls `event` and NCCL's asynchronous error until the timeout.
  llvm::Error complete(cudaEvent_t event, llvm::StringRef what) {
    auto deadline = std::chrono::steady_clock::now() + timeout();
    for (;;) {
      cudaError_t state = cudaEventQuery(event);
      if (state == cudaSuccess)
        return llvm::Error::success();
      if (state != cudaErrorNotReady)
        return cudaFailure(state, what);
      ncclResult_t async = ncclSuccess;
      RETURN_IF_NCCL(ncclCommGetAsyncError(comm, &async), what);
      if (async != ncclSuccess && async != ncclInProgress)
        return ncclFailure(async, what);
      if (std::chrono::steady_clock::now() > deadline) {
        ncclCommAbort(comm);
        return timeoutError(what);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }

  llvm::Expected<cudaEvent_t> record(llvm::StringRef what) {
    cudaEvent_t event;
    RETURN_IF_CUDA(cudaEventCreateWithFlags(&event, cudaEventDisableTiming),
                   what);
    RETURN_IF_CUDA(cudaEventRecord(event, stream), what);
    return event;
  }

  /// Waits for everything queued on the stream so far.
  llvm::Error finish(llvm::StringRef what) {
    llvm::Expected<cudaEvent_t> done = record(what);
    if (!done)
      return done.takeError();
    llvm::Error error = complete(*done, what);
    cudaEventDestroy(*done);
    return error;
  }

  llvm::Expected<std::unique_ptr<PendingCollective>>
  startAllGather(const float *shard, float *full, size_t shardElements,
                 size_t total, llvm::StringRef what) override {
    size_t padded = shardElements * size_t(size());
    float *receive = full, *staged = nullptr;
    if (padded != total) {
      RETURN_IF_CUDA(cudaMallocAsync(reinterpret_cast<void **>(&staged),
                                     padded * sizeof(float), stream),
                     what);
      receive = staged;
    }
    RETURN_IF_NCCL(ncclAllGather(shard, receive, shardElements, ncclFloat,
                                 comm, stream),
                   what);
    if (staged) {
      RETURN_IF_CUDA(cudaMemcpyAsync(full, staged, total * sizeof(float),
                                     cudaMemcpyDeviceToDevice, stream),
                     what);
      RETURN_IF_CUDA(cudaFreeAsync(staged, stream), what);
    }
    llvm::Expected<cudaEvent_t> done = record(what);
    if (!done)
      return done.takeError();
    return std::make_unique<NcclPending>(*this, *done, what.str(), nullptr,
                                         full, total);
  }

  llvm::Error reduceScatterSum(const float *full, float *shard,
                               size_t shardElements, size_t total,
                               llvm::StringRef what) override {
    size_t padded = shardElements * size_t(size());
    const float *send = full;
    float *staged = nullptr;
    if (padded != total) {
      RETURN_IF_CUDA(cudaMallocAsync(reinterpret_cast<void **>(&staged),
                                     padded * sizeof(float), stream),
                     what);
      RETURN_IF_CUDA(cudaMemsetAsync(staged + total, 0,
                                     (padded - total) * sizeof(float), stream),
                     what);
      RETURN_IF_CUDA(cudaMemcpyAsync(staged, full, total * sizeof(float),
                                     cudaMemcpyDeviceToDevice, stream),
                     what);
      send = staged;
    }
    RETURN_IF_NCCL(ncclReduceScatter(send, shard, shardElements, ncclFloat,
                                     ncclSum, comm, stream),
                   what);
    if (staged)
      RETURN_IF_CUDA(cudaFreeAsync(staged, stream), what);
    return finish(what);
  }

  /// Host values through a device buffer.
  llvm::Error hostCollective(void *bytes, size_t size, llvm::StringRef what,
                             llvm::function_ref<ncclResult_t(void *)> run) {
    void *device = nullptr;
    RETURN_IF_CUDA(cudaMallocAsync(&device, std::max<size_t>(size, 8), stream),
                   what);
    RETURN_IF_CUDA(cudaMemcpyAsync(device, bytes, size, cudaMemcpyHostToDevice,
                                   stream),
                   what);
    RETURN_IF_NCCL(run(device), what);
    RETURN_IF_CUDA(cudaMemcpyAsync(bytes, device, size, cudaMemcpyDeviceToHost,
                                   stream),
                   what);
    RETURN_IF_CUDA(cudaFreeAsync(device, stream), what);
    return finish(what);
  }

  llvm::Error allReduceSum(double *values, size_t count,
                           llvm::StringRef what) override {
    return hostCollective(values, count * sizeof(double), what,
                          [&](void *device) {
                            return ncclAllReduce(device, device, count,
                                                 ncclDouble, ncclSum, comm,
                                                 stream);
                          });
  }

  llvm::Error barrier(llvm::StringRef what) override {
    double token = 0;
    return allReduceSum(&token, 1, what);
  }

  llvm::Error broadcast(void *bytes, size_t size, int root,
                        llvm::StringRef what) override {
    return hostCollective(bytes, size, what, [&](void *device) {
      return ncclBroadcast(device, device, size, ncclUint8, root, comm, stream);
    });
  }

  [[noreturn]] void abort(int exitCode) override {
    ncclCommAbort(comm);
    bootstrap.abort(exitCode);
    std::exit(exitCode); // not reached: the bootstrap's abort ends the job
  }

private:
  Communicator &bootstrap;
  ncclComm_t comm;
  cudaStream_t stream;
};

NcclPending::~NcclPending() { cudaEventDestroy(done); }

llvm::Error NcclPending::wait() { return comm.complete(done, what); }

} // namespace

llvm::Expected<std::unique_ptr<Communicator>>
momac::createNcclCommunicator(Communicator &bootstrap, int device) {
  RETURN_IF_CUDA(cudaSetDevice(device), "cudaSetDevice");
  ncclUniqueId id;
  if (bootstrap.rank() == 0)
    RETURN_IF_NCCL(ncclGetUniqueId(&id), "ncclGetUniqueId");
  if (llvm::Error error = bootstrap.broadcast(&id, sizeof(id), 0,
                                              "the NCCL unique id broadcast"))
    return std::move(error);
  ncclComm_t comm;
  RETURN_IF_NCCL(ncclCommInitRank(&comm, bootstrap.size(), id, bootstrap.rank()),
                 "ncclCommInitRank");
  cudaStream_t stream;
  RETURN_IF_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
                 "cudaStreamCreate");
  return std::make_unique<NcclCommunicator>(bootstrap, comm, stream);
}
