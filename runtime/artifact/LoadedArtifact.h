//===- LoadedArtifact.h - A compiled artifact, ready to call ----*- C++ -*-===//

#ifndef MOMAC_RUNTIME_ARTIFACT_LOADEDARTIFACT_H
#define MOMAC_RUNTIME_ARTIFACT_LOADEDARTIFACT_H

#include "lib/artifact/Manifest.h"
#include "lib/config/ModelConfig.h"

#include "llvm/Support/Error.h"

namespace momac {

/// The manifest, the model description and the dlopened library of an
/// artifact directory written by `momac MODEL.json -o DIR`.
class LoadedArtifact {
public:
  using EntryFunction = void (*)(void **buffers);

  /// Checks that the three files exist and agree (the manifest's parameters
  /// are the description's), then loads model.so. Errors name the file.
  static llvm::Expected<LoadedArtifact> open(llvm::StringRef directory);

  const Manifest &manifest() const { return manifestData; }
  const ModelConfig &config() const { return configData; }
  const std::string &directory() const { return dir; }

  /// The entry point and its function, or an error naming what is missing.
  llvm::Expected<std::pair<const EntryPointSpec *, EntryFunction>>
  entryPoint(llvm::StringRef name) const;

private:
  std::string dir;
  Manifest manifestData;
  ModelConfig configData;
  std::string libraryPath;
};

} // namespace momac

#endif // MOMAC_RUNTIME_ARTIFACT_LOADEDARTIFACT_H
