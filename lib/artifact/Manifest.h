//===- Manifest.h - The manifest of a compiled artifact ---------*- C++ -*-===//
//
// manifest.json describes what model.so computes: the parameters (names,
// shapes, init, optimizer treatment) and each entry point's buffers. An entry
// point is called as `void symbol(void **buffers)` with one pointer per
// argument followed by one per result, each a dense row-major buffer of the
// listed dtype and shape; results are written in place. A result marked
// "in_place" is its same-named argument updated: the caller passes that
// argument's buffer for both (BufferSpec::inPlace).
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_LIB_ARTIFACT_MANIFEST_H
#define MOMAC_LIB_ARTIFACT_MANIFEST_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/JSON.h"

#include <optional>
#include <string>
#include <vector>

namespace momac {

struct BufferSpec {
  std::string name;
  std::string dtype; // "F32" or "I32", as in safetensors
  std::vector<int64_t> shape;
  /// A result written in place of the argument of the same name: the caller
  /// passes that argument's buffer for it (AdamW's parameters and moments).
  bool inPlace = false;
  /// An argument passed in host memory wherever the step runs (a scalar
  /// its host code reads: batch_rows); a CUDA runtime does not copy it.
  bool onHost = false;
  int64_t numElements() const;
};

struct EntryPointSpec {
  std::string name;   // "forward"
  std::string symbol; // "momac_forward"
  std::vector<BufferSpec> arguments;
  std::vector<BufferSpec> results;
};

struct ManifestParameter {
  std::string name;
  std::vector<int64_t> shape;
  std::string init; // "normal" (N(0, 0.02)), "ones" or "zeros"
  bool weightDecay = false;
  bool auxRouter = false;
  int64_t numElements() const;
};

/// An FSDP unit of an artifact compiled with `momac --fsdp`
/// (lib/config/ShardUnits.h): its parameters lie at `offsets` in one flat
/// buffer of `elements` f32, which R ranks split into R contiguous shards of
/// ShardUnit::shardElements(R) elements, zero-padded at the end.
struct ManifestShardUnit {
  std::string name;
  int64_t elements = 0;
  std::vector<std::string> parameters;
  std::vector<int64_t> offsets;
};

struct Manifest {
  static constexpr int kVersion = 1;
  /// The targets momac compiles for (and momarun runs).
  static constexpr const char *kTargets[] = {"cpu", "cuda", "cuda-emulated"};
  std::string target = "cpu";
  std::string model;
  std::string library = "model.so";
  /// The library's size in bytes and its XXH3-64 hash (16 hex digits), which
  /// momarun checks before loading it: a truncated or replaced model.so is
  /// an error, not a SIGBUS. Empty in artifacts of older momacs.
  std::optional<int64_t> librarySize;
  std::string libraryHash;
  std::string description = "model.json";
  /// What a bf16 model's GEMMs are when momac decided it ("bf16_gemm":
  /// the CPU target's f32 GEMMs on rounded operands); empty when the
  /// runtime decides (momarun then names its choice).
  std::string bf16Gemm;
  int64_t batchSize = 0;
  int64_t seqLen = 0;
  int64_t vocabSize = 0;
  std::vector<ManifestParameter> parameters;
  std::vector<EntryPointSpec> entryPoints;
  /// With `momac --fsdp`: the units the sharded entry points gather and
  /// reduce-scatter, and the elements of one optimizer chunk (the static
  /// size of fsdp_adamw_* and fsdp_grad_norm's buffers); else empty and 0.
  std::vector<ManifestShardUnit> shardUnits;
  int64_t shardChunkElements = 0;

  const EntryPointSpec *findEntryPoint(llvm::StringRef name) const;
};

llvm::json::Value toJSON(const Manifest &manifest);

/// A parameter and an FSDP unit as the manifest writes them (a shard-set
/// checkpoint records its layout the same way); fromJSON reads them back,
/// reporting errors at `path`.
llvm::json::Value toJSON(const ManifestParameter &parameter);
llvm::json::Value toJSON(const ManifestShardUnit &unit);
bool fromJSON(const llvm::json::Value &value, ManifestParameter &parameter,
              llvm::json::Path path);
bool fromJSON(const llvm::json::Value &value, ManifestShardUnit &unit,
              llvm::json::Path path);

/// The size and XXH3-64 hash (16 hex digits) of the file at `path`, as the
/// manifest records them for the library.
llvm::Expected<std::pair<int64_t, std::string>>
fingerprintFile(llvm::StringRef path);

/// Reads and checks manifest.json; errors name the file and the JSON path.
llvm::Expected<Manifest> readManifest(llvm::StringRef path);

/// The same for manifest text already in memory; errors start with `name`.
llvm::Expected<Manifest> parseManifest(llvm::StringRef text,
                                       llvm::StringRef name);

} // namespace momac

#endif // MOMAC_LIB_ARTIFACT_MANIFEST_H
