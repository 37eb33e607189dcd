//===- Device.cpp - Where an artifact's steps run, for momarun ------------===//

#include "runtime/device/Device.h"

#include "runtime/device/cpu/CpuThreads.h"
#include "runtime/device/cpu/OpenBlasCore.h"

using namespace momac;

Device::~Device() = default;

void momac::prepareHostBeforeThreads() {
  cpu::chooseOpenBlasCoreBeforeThreads();
}

void momac::prepareHostBeforeLoad() { cpu::configureThreadsBeforeLoad(); }

llvm::Expected<std::unique_ptr<Device>>
momac::openDevice(llvm::sys::DynamicLibrary library,
                  llvm::StringRef libraryPath) {
  llvm::Expected<std::unique_ptr<Device>> gpu =
      cuda::openCudaDevice(library, libraryPath);
  if (!gpu || *gpu)
    return gpu;
  return cpu::openHostDevice(library);
}
