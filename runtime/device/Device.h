//===- Device.h - Where an artifact's steps run, for momarun ----*- C++ -*-===//
//
// The runtime's device seam, the counterpart of the compiler's TargetBackend:
// what momarun does with the memory and the calls of a compiled step goes
// through this interface. Two implementations:
//
// - device/cpu (HostDevice): a CPU artifact runs on momarun's buffers in
//   place; keeping, copying back and the like do nothing or work on host
//   memory;
// - device/cuda (CudaDevice): a CUDA artifact's GPU, reached through the CUDA
//   runtime its model.so carries (momarun links no CUDA): kept buffers live
//   in device memory, the others are copied for each call. Its emulation
//   (momac --target=cuda-emulated) exports the same runtime over host
//   memory and runs here too.
//
// openDevice picks the implementation by what model.so exports, so nothing
// above this layer (LoadedArtifact, the trainers, the sharded model)
// includes a CUDA header or tests a target name.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_DEVICE_DEVICE_H
#define MOMAC_RUNTIME_DEVICE_DEVICE_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/DynamicLibrary.h"
#include "llvm/Support/Error.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace momac {

class Communicator;
struct EntryPointSpec;

/// The copies a device's kept buffers made between host and device memory.
struct DeviceCopies {
  size_t deviceBytes = 0; // kept in device memory
  size_t uploads = 0, uploadedBytes = 0;
  size_t downloads = 0, downloadedBytes = 0;
};

class Device {
public:
  virtual ~Device();

  /// The device in words ("NVIDIA H200, 139.8 GiB"); empty for this CPU.
  virtual std::string description() const = 0;
  /// The GEMM libraries the steps call, and their kernels ("f32 GEMM:
  /// OpenBLAS 0.3.21, Zen kernels"), `bf16` also the bf16 GEMM's: momarun's
  /// first line of output says which a run uses.
  virtual std::string gemmLibraries(bool bf16) const = 0;
  /// Refuses, before anything is allocated there, work whose state
  /// (`bytes`, for `what`) does not fit the device's free memory: one line
  /// with both numbers. Nothing to check for this CPU (checkMemoryEstimate
  /// does).
  virtual llvm::Error checkMemory(int64_t bytes, llvm::StringRef what) const = 0;

  /// Calls `function`, an entry point of `entry`, on the host buffers
  /// `buffers` (arguments then results, manifest order and shapes). An error
  /// names the entry point and what failed.
  virtual llvm::Error call(void (*function)(void **),
                           const EntryPointSpec &entry, void **buffers) = 0;

  /// Where the training state lives between calls. Keeps `host` (`bytes`,
  /// named `what` in errors) where the steps run: the host values go there
  /// before the first call that reads them; calls then read and write that
  /// copy, and the host copy is current again only after copyToHost (the
  /// host writes a kept buffer only before keeping it).
  virtual llvm::Error keep(void *host, size_t bytes, llvm::StringRef what) = 0;
  virtual llvm::Error copyToHost(void *host) = 0;
  /// sum = (first ? 0 : sum) + scale * addend over `count` floats, where the
  /// buffers live (micro-batch gradients summed on a GPU).
  virtual llvm::Error accumulate(float *sum, const float *addend, size_t count,
                                 float scale, bool first) = 0;
  /// The copies kept buffers made so far, for a device with its own memory.
  virtual std::optional<DeviceCopies> copies() const = 0;

  /// What a sharded step does with its kept shards between calls. Each takes
  /// a kept buffer or an address inside one (a chunk of a shard):
  /// the address a collective uses for `host` (its device copy, brought up
  /// to date first when `read`), and telling that a collective wrote there;
  virtual float *stepAddress(float *host, bool read) = 0;
  virtual void collectiveWrote(float *host) = 0;
  /// zeroing and copying `count` floats;
  virtual llvm::Error zero(float *host, size_t count) = 0;
  virtual llvm::Error copy(float *to, const float *from, size_t count) = 0;
  /// zeroing memory a compiled step handed out (a gathered unit's gradient).
  virtual void zeroStepMemory(float *pointer, size_t count) = 0;
  /// The communicator for the FSDP units' gathers and reduce-scatters: the
  /// device's own (NCCL between GPUs), or null to use `ranks` (MPI between
  /// host buffers).
  virtual llvm::Expected<std::unique_ptr<Communicator>>
  unitCommunicator(Communicator &ranks) = 0;
};

/// What momarun sets up at start, before any thread and any library of an
/// artifact: the OpenBLAS kernels for this CPU (device/cpu/OpenBlasCore.h).
void prepareHostBeforeThreads();

/// What every artifact's host side needs set before its model.so is loaded
/// (device/cpu: BLAS and OpenMP thread settings).
void prepareHostBeforeLoad();

/// The device of the artifact whose model.so (at `libraryPath`) is
/// `library`: a GPU when it carries the CUDA runtime, this CPU otherwise.
/// For a CUDA artifact that this machine cannot run, an error saying why.
llvm::Expected<std::unique_ptr<Device>>
openDevice(llvm::sys::DynamicLibrary library, llvm::StringRef libraryPath);

namespace cpu {
std::unique_ptr<Device> openHostDevice(llvm::sys::DynamicLibrary library);
} // namespace cpu

namespace cuda {
/// Null when `library` carries no CUDA runtime.
llvm::Expected<std::unique_ptr<Device>>
openCudaDevice(llvm::sys::DynamicLibrary library, llvm::StringRef libraryPath);
} // namespace cuda

} // namespace momac

#endif // MOMAC_RUNTIME_DEVICE_DEVICE_H
