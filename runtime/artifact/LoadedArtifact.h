//===- LoadedArtifact.h - A compiled artifact, ready to call ----*- C++ -*-===//

#ifndef MOMAC_RUNTIME_ARTIFACT_LOADEDARTIFACT_H
#define MOMAC_RUNTIME_ARTIFACT_LOADEDARTIFACT_H

#include "lib/artifact/Manifest.h"
#include "lib/config/ModelConfig.h"
#include "runtime/device/cuda/ResidentBuffers.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/Support/Error.h"

#include <memory>
#include <optional>
#include <random>
#include <vector>

namespace momac {

/// The name of the router-noise argument of `forward` and `grad` in models
/// with `moe.gumbel`: [n_layers, tokens, max experts] logit noise.
constexpr llvm::StringLiteral kGumbelNoiseArgument = "gumbel_noise";

/// The argument of `forward` and `grad` that says how many rows of the
/// [train.batch_size, S+1] tokens buffer hold the micro-batch: artifacts
/// take any batch size up to the one they were compiled for.
constexpr llvm::StringLiteral kBatchRowsArgument = "batch_rows";

/// True when `entry` takes kBatchRowsArgument.
bool takesBatchRows(const EntryPointSpec &entry);

/// The manifest, the model description and the dlopened library of an
/// artifact directory written by `momac MODEL.json -o DIR`.
namespace cuda {
class ArtifactCudaRuntime;
} // namespace cuda

/// An entry point of a loaded artifact, called with its buffers: host
/// memory, arguments then results in manifest order and shapes. A CPU
/// artifact runs on them directly. A CUDA artifact runs on the GPU: buffers
/// kept on the device (LoadedArtifact::keepOnDevice) are used there, the
/// others are copied to device memory and the results back
/// (runtime/device/cuda/ArtifactCudaRuntime.h); an error names the failed
/// CUDA call.
class EntryFunction {
public:
  EntryFunction() = default;
  llvm::Error operator()(void **buffers) const;
  explicit operator bool() const { return function != nullptr; }

private:
  friend class LoadedArtifact;
  void (*function)(void **) = nullptr;
  const EntryPointSpec *spec = nullptr;
  std::shared_ptr<cuda::ArtifactCudaRuntime> cuda;
};

class LoadedArtifact {
public:
  using EntryFunction = momac::EntryFunction;

  /// Checks that the three files exist and agree (the manifest's parameters
  /// are the description's), then loads model.so. Errors name the file.
  static llvm::Expected<LoadedArtifact> open(llvm::StringRef directory);

  const Manifest &manifest() const { return manifestData; }
  const ModelConfig &config() const { return configData; }
  const std::string &directory() const { return dir; }

  /// The entry point and its function, or an error naming what is missing.
  llvm::Expected<std::pair<const EntryPointSpec *, EntryFunction>>
  entryPoint(llvm::StringRef name) const;

  /// The address of a symbol model.so exports (a runtime hook such as
  /// momart_fsdp_install), or null.
  void *symbol(llvm::StringRef name) const;

  /// For a CUDA artifact, the GPU it runs on ("NVIDIA H200, 139.8 GiB");
  /// empty for a CPU artifact.
  std::string deviceDescription() const;

  /// Where the training state lives between calls. A CUDA artifact keeps
  /// `host` (`bytes`, named `what` in errors) in GPU memory: the host
  /// values go up before the first call that reads them, entry points then
  /// read and write the device copy, and the host copy is current again
  /// only after copyToHost (the host writes a kept buffer only before
  /// keeping it). For a CPU artifact the host buffer is the state and these
  /// do nothing.
  llvm::Error keepOnDevice(void *host, size_t bytes,
                           llvm::StringRef what) const;
  llvm::Error copyToHost(void *host) const;
  /// sum = (first ? 0 : sum) + scale * addend over `count` floats, where
  /// the buffers live (micro-batch gradients summed on the GPU).
  llvm::Error accumulate(float *sum, const float *addend, size_t count,
                         float scale, bool first) const;
  /// Refuses, before anything is allocated there, work whose state (`bytes`,
  /// for `what`) does not fit in the free memory of a CUDA artifact's GPU:
  /// one line with both numbers, instead of an out-of-memory error in the
  /// middle of the first step. Nothing for a CPU artifact (its memory is
  /// checkMemoryEstimate's).
  llvm::Error checkDeviceMemory(int64_t bytes, llvm::StringRef what) const;
  /// For a CUDA artifact, the copies the kept buffers have made so far.
  std::optional<cuda::ResidentBuffers::Statistics> residentStatistics() const;

  /// What a sharded step does with its kept shards between calls, where
  /// they live. Each takes a kept buffer or an address inside one (a chunk
  /// of a shard):
  /// the address a collective uses for `host` (its device copy, uploaded
  /// first when `read` and the host side is newer; for a CPU artifact,
  /// `host`), and telling that a collective wrote there;
  float *stepAddress(float *host, bool read) const;
  void collectiveWrote(float *host) const;
  /// zeroing and copying `count` floats.
  llvm::Error zero(float *host, size_t count) const;
  llvm::Error copy(float *to, const float *from, size_t count) const;
  /// Zeroes `count` floats of memory a compiled step handed out (device
  /// memory for a CUDA artifact: a gathered unit's gradient).
  void zeroStepMemory(float *pointer, size_t count) const;
  /// A CUDA artifact's runtime (its NCCL, for a sharded step), or null.
  cuda::ArtifactCudaRuntime *deviceRuntime() const { return cudaRuntime.get(); }

private:
  std::string dir;
  Manifest manifestData;
  ModelConfig configData;
  std::string libraryPath;
  std::shared_ptr<cuda::ArtifactCudaRuntime> cudaRuntime;
  /// For a CUDA artifact this machine cannot run: why.
  std::string cudaUnavailable;
};

/// Binds an entry point's buffers by name: the call array lists the
/// argument buffers, then the result buffers, in manifest order. An unbound
/// name is an error naming it, and so is an in-place result bound to another
/// buffer than its argument.
llvm::Expected<std::vector<void *>>
bindByName(const EntryPointSpec &entry,
           const llvm::StringMap<void *> &arguments,
           const llvm::StringMap<void *> &results);

/// Zeroed f32 host buffers for every result of `entry`, in manifest order,
/// each bound by its name in `results` (for bindByName).
std::vector<std::vector<float>>
allocateResults(const EntryPointSpec &entry, llvm::StringMap<void *> &results);

/// Refuses, before anything is allocated, work whose memory estimate
/// (`bytes`, for `what`) exceeds `limitBytes`, or the machine's physical
/// memory when `limitBytes` is 0: a one-line error with both numbers
/// instead of swapping or an out-of-memory kill halfway through.
llvm::Error checkMemoryEstimate(int64_t bytes, llvm::StringRef what,
                                int64_t limitBytes = 0);

/// Fills `noise` with independent samples of G' - G'' for standard Gumbel
/// G', G'' (a standard logistic variable, log(u / (1 - u)) for uniform u in
/// (0, 1)): the router noise of MODEL_SPEC section 4.
void sampleGumbelNoise(std::mt19937_64 &rng, std::vector<float> &noise);

} // namespace momac

#endif // MOMAC_RUNTIME_ARTIFACT_LOADEDARTIFACT_H
