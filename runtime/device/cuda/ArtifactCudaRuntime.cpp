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
      !lookup("momart_cuda_device", runtime->device))
    return cudaError(libraryPath +
                     ": not a CUDA artifact's library (no CUDA runtime "
                     "symbols); recompile it with momac --target=cuda");
  if (const char *why = runtime->status())
    return cudaError(libraryPath + ": cannot run on this machine: " + why);
  return runtime;
}

std::string ArtifactCudaRuntime::deviceDescription() const {
  char name[256] = {0};
  size_t total = 0;
  if (!device(name, sizeof(name), &total))
    return "no CUDA device";
  return llvm::formatv("{0}, {1:F1} GiB", name,
                       double(total) / double(1ull << 30))
      .str();
}

llvm::Error ArtifactCudaRuntime::call(void (*function)(void **),
                                      const EntryPointSpec &entry,
                                      void **buffers) const {
  // One device buffer per distinct host buffer: a result that is also an
  // argument (an update in place) stays one buffer on the device too.
  llvm::DenseMap<void *, void *> deviceOf;
  std::vector<void *> deviceBuffers;
  auto release = [&] {
    for (auto &[host, onDevice] : deviceOf)
      free(onDevice);
  };
  auto fail = [&](const llvm::Twine &what) {
    const char *error = takeError();
    release();
    return cudaError(llvm::Twine(entry.name) + " on the GPU: " + what +
                     (error ? llvm::Twine(": ") + error : llvm::Twine()));
  };
  size_t index = 0;
  auto stage = [&](const BufferSpec &spec, bool upload) -> bool {
    void *host = buffers[index++];
    auto [slot, inserted] = deviceOf.try_emplace(host, nullptr);
    if (inserted) {
      slot->second = alloc(size_t(bytesOf(spec)));
      if (!slot->second)
        return false;
      if (upload)
        copyToDevice(slot->second, host, size_t(bytesOf(spec)));
    }
    deviceBuffers.push_back(slot->second);
    return true;
  };
  for (const BufferSpec &spec : entry.arguments)
    if (!stage(spec, /*upload=*/true))
      return fail("no device memory for argument '" + spec.name + "'");
  for (const BufferSpec &spec : entry.results)
    if (!stage(spec, /*upload=*/false))
      return fail("no device memory for result '" + spec.name + "'");
  function(deviceBuffers.data());
  synchronize();
  if (const char *error = takeError()) {
    std::string message = error;
    release();
    return cudaError(entry.name + " on the GPU: " + message);
  }
  size_t first = entry.arguments.size();
  for (size_t r = 0; r < entry.results.size(); ++r)
    copyToHost(buffers[first + r], deviceBuffers[first + r],
               size_t(bytesOf(entry.results[r])));
  if (const char *error = takeError()) {
    std::string message = error;
    release();
    return cudaError(entry.name + " on the GPU: " + message);
  }
  release();
  return llvm::Error::success();
}
