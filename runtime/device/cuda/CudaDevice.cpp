//===- CudaDevice.cpp - A CUDA artifact's GPU, for momarun ----------------===//
//
// A CUDA artifact's model.so carries the CUDA runtime (CudaRuntime.h);
// momarun reaches it through the symbols the library exports, so momarun
// builds and runs without CUDA and every CUDA call happens in the artifact.
// This is momarun's side of it, the CUDA implementation of the device seam
// (runtime/device/Device.h): whether the GPU can run the artifact, entry
// points called on host buffers, and the training state kept in device
// memory between calls (ResidentBuffers.h). A cuda-emulated artifact
// exports the same runtime over host memory and runs here too.
//
//===----------------------------------------------------------------------===//

#include "runtime/device/Device.h"

#include "lib/artifact/Manifest.h"
#include "runtime/comm/nccl/ArtifactNcclCommunicator.h"
#include "runtime/device/cuda/ResidentBuffers.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/Support/FormatVariadic.h"

#include <cstdlib>
#include <optional>
#include <vector>

using namespace momac;
using namespace momac::cuda;

namespace {

llvm::Error cudaError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 message.str());
}

int64_t bytesOf(const BufferSpec &spec) {
  int64_t element = spec.dtype == "BF16" ? 2 : spec.dtype == "F64" ? 8 : 4;
  return spec.numElements() * element;
}

class CudaDevice : public Device {
public:
  ~CudaDevice() override {
    // The device copies go back to the allocator before the library does.
    resident.reset();
  }

  /// Looks up the runtime's symbols in `library`; null when it has none.
  static llvm::Expected<std::unique_ptr<Device>>
  open(llvm::sys::DynamicLibrary library, llvm::StringRef libraryPath);

  std::string description() const override;
  std::string gemmLibraries(bool bf16) const override;
  llvm::Error checkMemory(int64_t bytes, llvm::StringRef what) const override;
  llvm::Error call(void (*function)(void **), const EntryPointSpec &entry,
                   void **buffers) override;
  llvm::Error keep(void *host, size_t bytes, llvm::StringRef what) override;
  llvm::Error copyToHost(void *host) override;
  llvm::Error accumulate(float *sum, const float *addend, size_t count,
                         float scale, bool first) override;
  std::optional<DeviceCopies> copies() const override;
  float *stepAddress(float *host, bool read) override {
    return static_cast<float *>(resident->device(host, read));
  }
  void collectiveWrote(float *host) override { resident->deviceWrote(host); }
  llvm::Error zero(float *host, size_t count) override;
  llvm::Error copy(float *to, const float *from, size_t count) override;
  void zeroStepMemory(float *pointer, size_t count) override {
    zeroBytes(pointer, count * sizeof(float));
  }
  llvm::Expected<std::unique_ptr<Communicator>>
  unitCommunicator(Communicator &ranks) override;

private:
  using Status = const char *(*)();
  using Alloc = void *(*)(size_t);
  using Free = void (*)(void *);
  using CopyTo = void (*)(void *, const void *, size_t);
  using Synchronize = void (*)();
  using DeviceName = bool (*)(char *, size_t, size_t *);
  using Zero = void (*)(void *, size_t);
  using Axpy = void (*)(int64_t, float, const float *, float *);
  using MemoryInfo = bool (*)(size_t *, size_t *);

  llvm::Error takenError(const llvm::Twine &context);

  std::string libraryPath;
  Status status = nullptr, takeError = nullptr;
  Alloc alloc = nullptr;
  Free free = nullptr;
  CopyTo copyToDevice = nullptr, copyBytesToHost = nullptr;
  Synchronize synchronize = nullptr;
  DeviceName deviceName = nullptr;
  Zero zeroBytes = nullptr;
  Axpy axpy = nullptr;
  CopyTo copyDevice = nullptr;
  /// Optional: artifacts compiled before these existed lack them.
  MemoryInfo memoryInfo = nullptr;
  Status deviceChoice = nullptr;
  /// NCCL, only in artifacts compiled with --fsdp (not in their emulation).
  std::optional<NcclCalls> ncclCalls;
  std::unique_ptr<ResidentBuffers> resident;
};

} // namespace

llvm::Expected<std::unique_ptr<Device>>
CudaDevice::open(llvm::sys::DynamicLibrary library,
                 llvm::StringRef libraryPath) {
  if (!library.getAddressOfSymbol("momart_cuda_status"))
    return nullptr;
  auto device = std::make_unique<CudaDevice>();
  device->libraryPath = libraryPath.str();
  auto lookup = [&](const char *name, auto &slot) -> bool {
    slot = reinterpret_cast<std::remove_reference_t<decltype(slot)>>(
        library.getAddressOfSymbol(name));
    return slot != nullptr;
  };
  if (!lookup("momart_cuda_status", device->status) ||
      !lookup("momart_cuda_take_error", device->takeError) ||
      !lookup("momart_cuda_alloc", device->alloc) ||
      !lookup("momart_cuda_free", device->free) ||
      !lookup("momart_cuda_copy_to_device", device->copyToDevice) ||
      !lookup("momart_cuda_copy_to_host", device->copyBytesToHost) ||
      !lookup("momart_cuda_synchronize", device->synchronize) ||
      !lookup("momart_cuda_device", device->deviceName) ||
      !lookup("momart_cuda_zero", device->zeroBytes) ||
      !lookup("momart_cuda_axpy", device->axpy) ||
      !lookup("momart_cuda_copy_device", device->copyDevice))
    return cudaError(libraryPath +
                     ": not a CUDA artifact's library (some CUDA runtime "
                     "symbols are missing); recompile it with momac "
                     "--target=cuda");
  lookup("momart_cuda_memory_info", device->memoryInfo);
  lookup("momart_cuda_device_choice", device->deviceChoice);
  NcclCalls nccl;
  nccl.takeError = device->takeError;
  if (lookup("momart_cuda_comm_id_bytes", nccl.idBytes) &&
      lookup("momart_cuda_comm_unique_id", nccl.uniqueId) &&
      lookup("momart_cuda_comm_init", nccl.init) &&
      lookup("momart_cuda_all_gather", nccl.allGather) &&
      lookup("momart_cuda_reduce_scatter", nccl.reduceScatter) &&
      lookup("momart_cuda_comm_destroy", nccl.destroy))
    device->ncclCalls = nccl;
  if (const char *why = device->status())
    return cudaError(libraryPath + ": cannot run on this machine: " + why);
  CudaDevice *self = device.get();
  device->resident = std::make_unique<ResidentBuffers>(ResidentBuffers::Backend{
      [self](size_t bytes) { return self->alloc(bytes); },
      [self](void *pointer) { self->free(pointer); },
      [self](void *onDevice, const void *host, size_t bytes) {
        self->copyToDevice(onDevice, host, bytes);
      },
      [self](void *host, const void *onDevice, size_t bytes) {
        self->copyBytesToHost(host, onDevice, bytes);
      }});
  return std::unique_ptr<Device>(std::move(device));
}

llvm::Expected<std::unique_ptr<Device>>
momac::cuda::openCudaDevice(llvm::sys::DynamicLibrary library,
                            llvm::StringRef libraryPath) {
  return CudaDevice::open(library, libraryPath);
}

std::string CudaDevice::description() const {
  char name[256] = {0};
  size_t total = 0;
  if (!deviceName(name, sizeof(name), &total))
    return "no CUDA device";
  if (total == 0) // the emulation, in host memory
    return name;
  std::string text =
      llvm::formatv("{0}, {1:F1} GiB", name, double(total) / double(1ull << 30))
          .str();
  if (const char *why = deviceChoice ? deviceChoice() : nullptr; why && *why)
    text += std::string(" (chosen by ") + why + ")";
  return text;
}

std::string CudaDevice::gemmLibraries(bool bf16) const {
  char name[256] = {0};
  size_t total = 0;
  if (deviceName(name, sizeof(name), &total) && total == 0)
    return "cuBLAS calls emulated on this CPU's OpenBLAS";
  const char *tf32 = std::getenv("MOMA_ALLOW_TF32");
  std::string text = tf32 && std::string(tf32) == "1"
                         ? "f32 GEMM: cuBLAS, TF32 tensor cores (MOMA_ALLOW_TF32)"
                         : "f32 GEMM: cuBLAS, exact f32 (no TF32)";
  if (bf16)
    text += "; bf16 GEMM: cuBLAS tensor cores, f32 accumulation";
  return text;
}

llvm::Error CudaDevice::checkMemory(int64_t bytes, llvm::StringRef what) const {
  size_t freeBytes = 0, totalBytes = 0;
  if (!memoryInfo || !memoryInfo(&freeBytes, &totalBytes) ||
      bytes <= int64_t(freeBytes))
    return llvm::Error::success();
  return cudaError(llvm::formatv(
      "{0} needs at least {1:F2} GB of GPU memory, but {2} has {3:F2} GB free "
      "(of {4:F2} GB); pick a smaller model or shard it over several GPUs "
      "(mpirun -np R with an artifact compiled with --fsdp)",
      what, double(bytes) / 1e9, description(), double(freeBytes) / 1e9,
      double(totalBytes) / 1e9));
}

llvm::Error CudaDevice::takenError(const llvm::Twine &context) {
  if (const char *error = takeError())
    return cudaError(context + ": " + error);
  return llvm::Error::success();
}

llvm::Error CudaDevice::call(void (*function)(void **),
                             const EntryPointSpec &entry, void **buffers) {
  // Kept buffers are used in place. Every other distinct host buffer gets a
  // device buffer for this call: a result that is also an argument (an
  // update in place) stays one buffer on the device too.
  llvm::DenseMap<void *, void *> deviceOf;
  llvm::DenseMap<void *, void *> staged; // host -> device, freed after
  std::vector<void *> deviceBuffers;
  auto release = [&] {
    for (auto &[host, onDevice] : staged)
      free(onDevice);
  };
  auto fail = [&](const llvm::Twine &what) {
    const char *error = takeError();
    release();
    return cudaError(llvm::Twine(entry.name) + " on the GPU: " + what +
                     (error ? llvm::Twine(": ") + error : llvm::Twine()));
  };
  size_t index = 0;
  auto stage = [&](const BufferSpec &spec, bool isArgument) -> bool {
    void *host = buffers[index++];
    // A scalar the step's host code reads (batch_rows) stays where it is.
    if (spec.onHost) {
      deviceBuffers.push_back(host);
      return true;
    }
    auto [slot, inserted] = deviceOf.try_emplace(host, nullptr);
    if (inserted) {
      slot->second =
          resident->device(host, /*read=*/isArgument, size_t(bytesOf(spec)));
      if (!slot->second && resident->isKept(host))
        return false; // runs past the end of its kept buffer
      if (!slot->second) {
        slot->second = alloc(size_t(bytesOf(spec)));
        if (!slot->second)
          return false;
        staged[host] = slot->second;
        if (isArgument)
          copyToDevice(slot->second, host, size_t(bytesOf(spec)));
      }
    }
    deviceBuffers.push_back(slot->second);
    return true;
  };
  auto why = [&](const BufferSpec &spec) -> std::string {
    return resident->isKept(buffers[index - 1])
               ? "'" + spec.name + "' runs past the end of its buffer in GPU "
                                   "memory"
               : "no device memory for '" + spec.name + "'";
  };
  for (const BufferSpec &spec : entry.arguments)
    if (!stage(spec, /*isArgument=*/true))
      return fail("argument " + why(spec));
  for (const BufferSpec &spec : entry.results)
    if (!stage(spec, /*isArgument=*/false))
      return fail("result " + why(spec));
  function(deviceBuffers.data());
  synchronize();
  if (llvm::Error error = takenError(entry.name + " on the GPU")) {
    release();
    return error;
  }
  size_t first = entry.arguments.size();
  for (size_t r = 0; r < entry.results.size(); ++r) {
    void *host = buffers[first + r];
    if (resident->isKept(host))
      resident->deviceWrote(host);
    else
      copyBytesToHost(host, deviceBuffers[first + r],
                 size_t(bytesOf(entry.results[r])));
  }
  release();
  return takenError(entry.name + " on the GPU");
}

llvm::Error CudaDevice::keep(void *host, size_t bytes, llvm::StringRef what) {
  if (resident->keep(host, bytes))
    return llvm::Error::success();
  const char *error = takeError();
  return cudaError(llvm::formatv("keeping {0} ({1} bytes) in GPU memory: {2}",
                                 what, bytes,
                                 error ? error
                                       : "it overlaps a buffer kept there, or "
                                         "is kept with another size"));
}

llvm::Error CudaDevice::copyToHost(void *host) {
  resident->toHost(host);
  return takenError("copying the training state to the host");
}

llvm::Error CudaDevice::accumulate(float *sum, const float *addend,
                                   size_t count, float scale, bool first) {
  void *addendOnDevice = resident->device(const_cast<float *>(addend), true);
  void *sumOnDevice = resident->device(sum, /*read=*/!first);
  if (!addendOnDevice || !sumOnDevice)
    return cudaError("accumulating gradients on the GPU: the buffers are not "
                     "in GPU memory");
  if (first)
    zeroBytes(sumOnDevice, count * sizeof(float));
  axpy(int64_t(count), scale, static_cast<const float *>(addendOnDevice),
       static_cast<float *>(sumOnDevice));
  resident->deviceWrote(sum);
  return takenError("accumulating gradients on the GPU");
}

std::optional<DeviceCopies> CudaDevice::copies() const {
  ResidentBuffers::Statistics stats = resident->statistics();
  DeviceCopies copies;
  copies.deviceBytes = stats.deviceBytes;
  copies.uploads = stats.uploads;
  copies.uploadedBytes = stats.uploadedBytes;
  copies.downloads = stats.downloads;
  copies.downloadedBytes = stats.downloadedBytes;
  return copies;
}

llvm::Error CudaDevice::zero(float *host, size_t count) {
  // (Read: the rest of the buffer must be current on the device.)
  void *onDevice = resident->device(host, /*read=*/true);
  if (!onDevice)
    return cudaError("zeroing on the GPU: the buffer is not in GPU memory");
  zeroBytes(onDevice, count * sizeof(float));
  resident->deviceWrote(host);
  return takenError("zeroing on the GPU");
}

llvm::Error CudaDevice::copy(float *to, const float *from, size_t count) {
  void *source = resident->device(const_cast<float *>(from), /*read=*/true);
  void *target = resident->device(to, /*read=*/true);
  if (!source || !target)
    return cudaError("copying on the GPU: the buffers are not in GPU memory");
  copyDevice(target, source, count * sizeof(float));
  resident->deviceWrote(to);
  return takenError("copying on the GPU");
}

llvm::Expected<std::unique_ptr<Communicator>>
CudaDevice::unitCommunicator(Communicator &ranks) {
  // The emulation has no NCCL: its shards, in host memory, gather over the
  // ranks' own communicator.
  if (!ncclCalls)
    return nullptr;
  return createArtifactNcclCommunicator(ranks, *ncclCalls);
}
