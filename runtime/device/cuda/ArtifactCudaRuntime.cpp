//===- ArtifactCudaRuntime.cpp - A CUDA artifact's runtime, from momarun --===//

#include "runtime/device/cuda/ArtifactCudaRuntime.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/Support/FormatVariadic.h"

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

} // namespace

llvm::Expected<std::shared_ptr<ArtifactCudaRuntime>>
ArtifactCudaRuntime::open(llvm::sys::DynamicLibrary library,
                          llvm::StringRef libraryPath) {
  auto runtime = std::make_shared<ArtifactCudaRuntime>();
  runtime->libraryPath = libraryPath.str();
  auto lookup = [&](const char *name, auto &slot) -> bool {
    slot = reinterpret_cast<std::remove_reference_t<decltype(slot)>>(
        library.getAddressOfSymbol(name));
    return slot != nullptr;
  };
  if (!lookup("momart_cuda_status", runtime->status) ||
      !lookup("momart_cuda_take_error", runtime->takeError) ||
      !lookup("momart_cuda_alloc", runtime->alloc) ||
      !lookup("momart_cuda_free", runtime->free) ||
      !lookup("momart_cuda_copy_to_device", runtime->copyToDevice) ||
      !lookup("momart_cuda_copy_to_host", runtime->copyToHost) ||
      !lookup("momart_cuda_synchronize", runtime->synchronize) ||
      !lookup("momart_cuda_device", runtime->device) ||
      !lookup("momart_cuda_zero", runtime->zero) ||
      !lookup("momart_cuda_axpy", runtime->axpy) ||
      !lookup("momart_cuda_copy_device", runtime->copyDevice))
    return cudaError(libraryPath +
                     ": not a CUDA artifact's library (no CUDA runtime "
                     "symbols); recompile it with momac --target=cuda");
  lookup("momart_cuda_memory_info", runtime->memoryInfoCall);
  lookup("momart_cuda_device_choice", runtime->deviceChoice);
  // NCCL, only in artifacts compiled with --fsdp.
  NcclCalls nccl;
  nccl.takeError = runtime->takeError;
  if (lookup("momart_cuda_comm_id_bytes", nccl.idBytes) &&
      lookup("momart_cuda_comm_unique_id", nccl.uniqueId) &&
      lookup("momart_cuda_comm_init", nccl.init) &&
      lookup("momart_cuda_all_gather", nccl.allGather) &&
      lookup("momart_cuda_reduce_scatter", nccl.reduceScatter) &&
      lookup("momart_cuda_comm_destroy", nccl.destroy))
    runtime->ncclCalls = nccl;
  if (const char *why = runtime->status())
    return cudaError(libraryPath + ": cannot run on this machine: " + why);
  ArtifactCudaRuntime *self = runtime.get();
  runtime->resident = std::make_unique<ResidentBuffers>(ResidentBuffers::Backend{
      [self](size_t bytes) { return self->alloc(bytes); },
      [self](void *pointer) { self->free(pointer); },
      [self](void *device, const void *host, size_t bytes) {
        self->copyToDevice(device, host, bytes);
      },
      [self](void *host, const void *device, size_t bytes) {
        self->copyToHost(host, device, bytes);
      }});
  return runtime;
}

ArtifactCudaRuntime::~ArtifactCudaRuntime() {
  // The device copies go back to the allocator before the library does.
  resident.reset();
}

std::string ArtifactCudaRuntime::deviceDescription() const {
  char name[256] = {0};
  size_t total = 0;
  if (!device(name, sizeof(name), &total))
    return "no CUDA device";
  if (total == 0) // the emulation, in host memory
    return name;
  std::string description =
      llvm::formatv("{0}, {1:F1} GiB", name, double(total) / double(1ull << 30))
          .str();
  if (const char *why = deviceChoice ? deviceChoice() : nullptr; why && *why)
    description += std::string(" (chosen by ") + why + ")";
  return description;
}

std::optional<std::pair<size_t, size_t>>
ArtifactCudaRuntime::memoryInfo() const {
  size_t freeBytes = 0, totalBytes = 0;
  if (!memoryInfoCall || !memoryInfoCall(&freeBytes, &totalBytes))
    return std::nullopt;
  return std::make_pair(freeBytes, totalBytes);
}

llvm::Error ArtifactCudaRuntime::takenError(const llvm::Twine &context) {
  if (const char *error = takeError())
    return cudaError(context + ": " + error);
  return llvm::Error::success();
}

llvm::Error ArtifactCudaRuntime::call(void (*function)(void **),
                                      const EntryPointSpec &entry,
                                      void **buffers) {
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
      copyToHost(host, deviceBuffers[first + r],
                 size_t(bytesOf(entry.results[r])));
  }
  release();
  return takenError(entry.name + " on the GPU");
}

llvm::Error ArtifactCudaRuntime::keep(void *host, size_t bytes,
                                      llvm::StringRef what) {
  if (resident->keep(host, bytes))
    return llvm::Error::success();
  const char *error = takeError();
  return cudaError(llvm::formatv("keeping {0} ({1} bytes) in GPU memory: {2}",
                                 what, bytes,
                                 error ? error
                                       : "it overlaps a buffer kept there, or "
                                         "is kept with another size"));
}

llvm::Error ArtifactCudaRuntime::toHost(void *host) {
  resident->toHost(host);
  return takenError("copying the training state to the host");
}

llvm::Error ArtifactCudaRuntime::accumulate(float *sum, const float *addend,
                                            size_t count, float scale,
                                            bool first) {
  void *addendOnDevice = resident->device(const_cast<float *>(addend), true);
  void *sumOnDevice = resident->device(sum, /*read=*/!first);
  if (!addendOnDevice || !sumOnDevice)
    return cudaError("accumulating gradients on the GPU: the buffers are not "
                     "in GPU memory");
  if (first)
    zero(sumOnDevice, count * sizeof(float));
  axpy(int64_t(count), scale, static_cast<const float *>(addendOnDevice),
       static_cast<float *>(sumOnDevice));
  resident->deviceWrote(sum);
  return takenError("accumulating gradients on the GPU");
}

ResidentBuffers::Statistics ArtifactCudaRuntime::residentStatistics() const {
  return resident->statistics();
}

void *ArtifactCudaRuntime::deviceAddress(void *host, bool read) {
  return resident->device(host, read);
}

void ArtifactCudaRuntime::deviceWrote(void *host) {
  resident->deviceWrote(host);
}

llvm::Error ArtifactCudaRuntime::zeroKept(void *host, size_t bytes) {
  // (Read: the rest of the buffer must be current on the device.)
  void *onDevice = resident->device(host, /*read=*/true);
  if (!onDevice)
    return cudaError("zeroing on the GPU: the buffer is not in GPU memory");
  zero(onDevice, bytes);
  resident->deviceWrote(host);
  return takenError("zeroing on the GPU");
}

llvm::Error ArtifactCudaRuntime::copyKept(void *to, const void *from,
                                          size_t bytes) {
  void *source = resident->device(const_cast<void *>(from), /*read=*/true);
  void *target = resident->device(to, /*read=*/true);
  if (!source || !target)
    return cudaError("copying on the GPU: the buffers are not in GPU memory");
  copyDevice(target, source, bytes);
  resident->deviceWrote(to);
  return takenError("copying on the GPU");
}

void ArtifactCudaRuntime::zeroDevice(void *onDevice, size_t bytes) {
  zero(onDevice, bytes);
}
