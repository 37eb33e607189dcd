//===- HostDevice.cpp - A CPU artifact's device: momarun's own memory -----===//
//
// A CPU artifact's steps run on momarun's host buffers in place: the
// buffers are the training state, so keeping them or copying them back does
// nothing, and zeroing, copying and summing work on them directly.
//
//===----------------------------------------------------------------------===//

#include "runtime/device/Device.h"

#include "runtime/comm/Communicator.h"
#include "runtime/device/cpu/OpenBlasCore.h"

#include <algorithm>

using namespace momac;

namespace {

class HostDevice : public Device {
public:
  explicit HostDevice(llvm::sys::DynamicLibrary library) : library(library) {}

  std::string description() const override { return ""; }
  std::string gemmLibraries(bool bf16) const override {
    std::string text = "f32 GEMM: " + cpu::describeOpenBlas(library);
    // The bf16 GEMM's choice is measured on its first call (GemmBf16.cpp).
    auto bf16Path = reinterpret_cast<const char *(*)()>(
        library.getAddressOfSymbol("momart_gemm_bf16_path"));
    if (bf16 && bf16Path)
      text += std::string("; bf16 GEMM: ") + bf16Path();
    return text;
  }
  llvm::Error checkMemory(int64_t, llvm::StringRef) const override {
    return llvm::Error::success();
  }
  llvm::Error call(void (*function)(void **), const EntryPointSpec &,
                   void **buffers) override {
    function(buffers);
    return llvm::Error::success();
  }
  llvm::Error keep(void *, size_t, llvm::StringRef) override {
    return llvm::Error::success();
  }
  llvm::Error copyToHost(void *) override { return llvm::Error::success(); }
  llvm::Error accumulate(float *sum, const float *addend, size_t count,
                         float scale, bool first) override {
    if (first)
      for (size_t i = 0; i < count; ++i)
        sum[i] = scale * addend[i];
    else
      for (size_t i = 0; i < count; ++i)
        sum[i] += scale * addend[i];
    return llvm::Error::success();
  }
  std::optional<DeviceCopies> copies() const override { return std::nullopt; }
  float *stepAddress(float *host, bool) override { return host; }
  void collectiveWrote(float *) override {}
  llvm::Error zero(float *host, size_t count) override {
    std::fill(host, host + count, 0.0f);
    return llvm::Error::success();
  }
  llvm::Error copy(float *to, const float *from, size_t count) override {
    std::copy(from, from + count, to);
    return llvm::Error::success();
  }
  void zeroStepMemory(float *pointer, size_t count) override {
    std::fill(pointer, pointer + count, 0.0f);
  }
  llvm::Expected<std::unique_ptr<Communicator>>
  unitCommunicator(Communicator &) override {
    return nullptr;
  }

private:
  // Looking a symbol up is not const in LLVM's interface.
  mutable llvm::sys::DynamicLibrary library;
};

} // namespace

std::unique_ptr<Device>
momac::cpu::openHostDevice(llvm::sys::DynamicLibrary library) {
  return std::make_unique<HostDevice>(library);
}
