//===- ArtifactCudaRuntime.h - A CUDA artifact's runtime, from momarun -*-===//
//
// A CUDA artifact's model.so carries the CUDA runtime (CudaRuntime.h);
// momarun reaches it through the symbols the library exports, so momarun
// builds and runs without CUDA and every CUDA call happens in the
// artifact. This is momarun's side: whether the GPU can run the artifact,
// and an entry-point call on host buffers.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_DEVICE_CUDA_ARTIFACTCUDARUNTIME_H
#define MOMAC_RUNTIME_DEVICE_CUDA_ARTIFACTCUDARUNTIME_H

#include "lib/artifact/Manifest.h"
#include "runtime/device/cuda/ResidentBuffers.h"

#include "llvm/Support/DynamicLibrary.h"
#include "llvm/Support/Error.h"

#include <memory>
#include <optional>
#include <string>

namespace momac::cuda {

/// The NCCL functions of a CUDA artifact compiled with --fsdp
/// (runtime/device/cuda/NcclCollectives.cpp, CudaRuntime.h).
struct NcclCalls {
  int64_t (*idBytes)();
  bool (*uniqueId)(void *id);
  bool (*init)(const void *id, int32_t rank, int32_t ranks,
               int64_t timeoutMs);
  void (*allGather)(const float *shard, float *full, int64_t shardElements,
                    int64_t total);
  void (*reduceScatter)(const float *full, float *shard,
                        int64_t shardElements, int64_t total);
  void (*destroy)();
  const char *(*takeError)();
};

class ArtifactCudaRuntime {
public:
  /// Looks up the runtime's symbols in `library` (model.so at
  /// `libraryPath`) and asks it whether the GPU is ready: an error, in one
  /// line, when there is no driver, no GPU, a driver too old for the
  /// kernels, or a GPU they cannot run on.
  static llvm::Expected<std::shared_ptr<ArtifactCudaRuntime>>
  open(llvm::sys::DynamicLibrary library, llvm::StringRef libraryPath);

  /// "NVIDIA H200, 139.8 GiB", and why this GPU when several are visible.
  std::string deviceDescription() const;
  /// The device's free and total bytes, when the artifact can say.
  std::optional<std::pair<size_t, size_t>> memoryInfo() const;

  /// Calls `function` (an entry point of `entry`) on the GPU with the
  /// host buffers `buffers` (arguments then results, manifest order and
  /// shapes). A kept buffer (keep) is used where it lives, in device
  /// memory; every other distinct buffer is copied to device memory for the
  /// call, and back when it is a result. A CUDA error during the call is an
  /// error naming the failed call and kernel; the host buffers then keep
  /// what they held before.
  llvm::Error call(void (*function)(void **), const EntryPointSpec &entry,
                   void **buffers);

  /// Keeps `host` (`bytes`) in device memory between calls
  /// (ResidentBuffers.h); an error when the GPU has no room for it.
  llvm::Error keep(void *host, size_t bytes, llvm::StringRef what);
  /// Makes a kept buffer's host copy current.
  llvm::Error toHost(void *host);
  /// sum = (first ? 0 : sum) + scale * addend over `count` floats, on the
  /// device (cuBLAS saxpy) when both are kept.
  llvm::Error accumulate(float *sum, const float *addend, size_t count,
                         float scale, bool first);
  /// The copies kept buffers have made so far.
  ResidentBuffers::Statistics residentStatistics() const;

  /// For a sharded step on the device. Each takes a kept buffer or an
  /// address inside one (a chunk of a shard), except zeroDevice, which
  /// takes device memory the step handed out (a gathered unit):
  /// where `host` lives on the device (uploaded first when `read` and the
  /// host side is newer), or null when it is not kept;
  void *deviceAddress(void *host, bool read);
  /// the device side of `host` was written (by a collective);
  void deviceWrote(void *host);
  /// zero or copy `bytes` there, on the device, in stream order.
  llvm::Error zeroKept(void *host, size_t bytes);
  llvm::Error copyKept(void *to, const void *from, size_t bytes);
  void zeroDevice(void *device, size_t bytes);
  /// The artifact's NCCL (an --fsdp CUDA artifact), or null.
  const NcclCalls *nccl() const { return ncclCalls ? &*ncclCalls : nullptr; }

  ArtifactCudaRuntime() = default;
  ~ArtifactCudaRuntime();

private:
  using Status = const char *(*)();
  using Alloc = void *(*)(size_t);
  using Free = void (*)(void *);
  using CopyTo = void (*)(void *, const void *, size_t);
  using Synchronize = void (*)();
  using Device = bool (*)(char *, size_t, size_t *);
  using Zero = void (*)(void *, size_t);
  using Axpy = void (*)(int64_t, float, const float *, float *);
  using MemoryInfo = bool (*)(size_t *, size_t *);
  using DeviceChoice = const char *(*)();

  llvm::Error takenError(const llvm::Twine &context);

  std::string libraryPath;
  Status status = nullptr, takeError = nullptr;
  Alloc alloc = nullptr;
  Free free = nullptr;
  CopyTo copyToDevice = nullptr, copyToHost = nullptr;
  Synchronize synchronize = nullptr;
  Device device = nullptr;
  Zero zero = nullptr;
  Axpy axpy = nullptr;
  /// Optional: artifacts compiled before these existed lack them.
  MemoryInfo memoryInfoCall = nullptr;
  DeviceChoice deviceChoice = nullptr;
  CopyTo copyDevice = nullptr;
  std::optional<NcclCalls> ncclCalls;
  std::unique_ptr<ResidentBuffers> resident;
};

} // namespace momac::cuda

#endif // MOMAC_RUNTIME_DEVICE_CUDA_ARTIFACTCUDARUNTIME_H
