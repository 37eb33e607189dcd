//===- LoadedArtifact.h - A compiled artifact, ready to call ----*- C++ -*-===//

#ifndef MOMAC_RUNTIME_ARTIFACT_LOADEDARTIFACT_H
#define MOMAC_RUNTIME_ARTIFACT_LOADEDARTIFACT_H

#include "lib/artifact/Manifest.h"
#include "lib/config/ModelConfig.h"
#include "runtime/device/Device.h"

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

/// An entry point of a loaded artifact, called with its buffers: host
/// memory, arguments then results in manifest order and shapes, on the
/// artifact's device (runtime/device/Device.h): a CPU artifact runs on them
/// directly; a CUDA artifact uses the buffers kept on its GPU where they
/// live and copies the others; an error names what failed.
class EntryFunction {
public:
  EntryFunction() = default;
  llvm::Error operator()(void **buffers) const;
  explicit operator bool() const { return function != nullptr; }

private:
  friend class LoadedArtifact;
  void (*function)(void **) = nullptr;
  const EntryPointSpec *spec = nullptr;
  Device *device = nullptr;
};

/// The manifest, the model description and the dlopened library of an
/// artifact directory written by `momac MODEL.json -o DIR`, and the device
/// its steps run on.
class LoadedArtifact {
public:
  using EntryFunction = momac::EntryFunction;

  /// Checks that the three files exist and agree (the manifest's parameters
  /// are the description's), then loads model.so. Errors name the file.
  static llvm::Expected<LoadedArtifact> open(llvm::StringRef directory);

  const Manifest &manifest() const { return manifestData; }
  const ModelConfig &config() const { return configData; }
  const std::string &directory() const { return dir; }

  /// The entry point and its function, or an error naming what is missing
  /// (or why this machine cannot run the artifact's device code).
  llvm::Expected<std::pair<const EntryPointSpec *, EntryFunction>>
  entryPoint(llvm::StringRef name) const;

  /// The address of a symbol model.so exports (a runtime hook such as
  /// momart_fsdp_install), or null.
  void *symbol(llvm::StringRef name) const;

  /// Where the steps run: memory kept there between calls, copies back,
  /// sums, the sharded step's shards (Device.h).
  Device &device() const { return *deviceData; }
  /// Which GEMM libraries and kernels the steps run ("f32 GEMM: OpenBLAS
  /// 0.3.21, Zen kernels"; a bf16 artifact's bf16 GEMM too): the first
  /// line momarun prints for a command that runs steps.
  std::string gemmLibraries() const;

private:
  std::string dir;
  Manifest manifestData;
  ModelConfig configData;
  std::string libraryPath;
  std::shared_ptr<Device> deviceData;
  /// For a CUDA artifact this machine cannot run: why (its device is then
  /// this CPU's, for what needs no entry point: init, upcycle).
  std::string deviceUnavailable;
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
