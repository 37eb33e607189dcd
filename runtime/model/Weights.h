//===- Weights.h - A model's parameters in memory ---------------*- C++ -*-===//

#ifndef MOMAC_RUNTIME_MODEL_WEIGHTS_H
#define MOMAC_RUNTIME_MODEL_WEIGHTS_H

#include "lib/artifact/Manifest.h"

#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/Error.h"

#include <map>
#include <vector>

namespace momac {

class LoadedArtifact;

/// One fp32 buffer per parameter, in manifest order.
class Weights {
public:
  static constexpr size_t kInitChunk = size_t(1) << 20;

  /// MODEL_SPEC section 2: matrices N(0, 0.02), norm weights 1, biases 0,
  /// from momarun's own generator: each parameter's values in chunks of
  /// kInitChunk, each chunk drawn from a 64-bit Mersenne Twister seeded from
  /// (`seed`, parameter index, chunk index), so that the chunks are drawn
  /// in parallel (a 7B-parameter model in seconds on a GPU machine's cores)
  /// and the values do not depend on the number of threads.
  static Weights initialize(const Manifest &manifest, uint64_t seed);
  /// The same values one parameter at a time: `take(i, values)` for each
  /// parameter i in manifest order, so that a caller keeping a slice of
  /// each (an FSDP rank) never holds the whole model.
  static void
  initializeEach(const Manifest &manifest, uint64_t seed,
                 llvm::function_ref<void(size_t, std::vector<float> &)> take);

  /// Loads F32 tensors named as the manifest's parameters; a missing, extra,
  /// misshapen or non-F32 tensor is an error naming it. Optimizer moments
  /// (optim.*) of a checkpoint are ignored.
  static llvm::Expected<Weights> load(const Manifest &manifest,
                                      llvm::StringRef path);
  /// The same checks and values one parameter at a time (initializeEach);
  /// the file is checked whole before the first `take`.
  static llvm::Error
  loadEach(const Manifest &manifest, llvm::StringRef path,
           llvm::function_ref<void(size_t, std::vector<float> &)> take);

  llvm::Error
  save(llvm::StringRef path,
       const std::map<std::string, std::string> &metadata = {}) const;

  size_t size() const { return values.size(); }
  const ManifestParameter &spec(size_t i) const { return params[i]; }
  std::vector<float> &operator[](size_t i) { return values[i]; }
  const std::vector<float> &operator[](size_t i) const { return values[i]; }
  /// Keeps every parameter on `artifact`'s device between calls that only
  /// read them (Device::keep); those for which `keep` is
  /// false stay host buffers, copied for each call.
  llvm::Error keepOnDevice(
      const LoadedArtifact &artifact,
      llvm::function_ref<bool(const ManifestParameter &)> keep =
          [](const ManifestParameter &) { return true; });

  /// An error naming the first parameter that holds NaN or Inf (`from`
  /// says where the weights came from): a diverged checkpoint must not
  /// silently generate or start a new model.
  llvm::Error checkFinite(llvm::StringRef from) const;

  /// Each parameter's buffer by its name (to bind an entry point's).
  llvm::StringMap<void *> byName();

  /// Every parameter's values, in manifest order.
  const std::vector<std::vector<float>> &tensors() const { return values; }

private:
  std::vector<ManifestParameter> params;
  std::vector<std::vector<float>> values;
};

} // namespace momac

#endif // MOMAC_RUNTIME_MODEL_WEIGHTS_H
