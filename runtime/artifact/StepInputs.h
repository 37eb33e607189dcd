//===- StepInputs.h - The buffers of one entry-point call -------*- C++ -*-===//
//
// What momarun's one-off commands (eval, grad) hand an entry point: token
// files of any batch size up to the compiled one, router-noise files, and
// the call's buffer array bound by name (tokens, batch_rows, parameters,
// noise, results).
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_ARTIFACT_STEPINPUTS_H
#define MOMAC_RUNTIME_ARTIFACT_STEPINPUTS_H

#include "lib/artifact/Manifest.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <utility>
#include <vector>

namespace momac {

/// One zeroed buffer per result of `entry`, sized from the manifest.
std::vector<std::vector<float>> allocateResults(const EntryPointSpec &entry);

/// The buffer array of a call of `entry`, bound by name: tokens, batch_rows
/// when the entry point takes it, the parameters (by name: Weights::byName),
/// the router noise when it takes that (`noise`, zero-filled to its size
/// when empty: evaluation routing) and the results.
llvm::Expected<std::vector<void *>>
entryBuffers(const EntryPointSpec &entry, std::vector<int32_t> &tokens,
             int32_t &batchRows, const llvm::StringMap<void *> &parameters,
             std::vector<float> &noise,
             std::vector<std::vector<float>> &results);

/// The fewest and most sequences a call of `entry` takes: 1 to the
/// compiled train.batch_size; older artifacts without batch_rows take
/// exactly that many.
std::pair<int64_t, int64_t> batchRange(const EntryPointSpec &entry,
                                       const Manifest &manifest);

/// Reads a [B, S+1] int32 token file, B within batchRange, into a buffer of
/// the compiled size (rows past B unused), setting `batchRows` to B. An
/// error names the file and what is wrong (its size, a token out of range).
llvm::Expected<std::vector<int32_t>> readTokenFile(llvm::StringRef path,
                                                   const Manifest &manifest,
                                                   const EntryPointSpec &entry,
                                                   int32_t &batchRows);

/// Reads router noise for `entry` (raw little-endian float32 [n_layers,
/// B*S, E]) and places it in the compiled [n_layers, max, E] layout.
llvm::Expected<std::vector<float>>
readRouterNoise(llvm::StringRef path, const EntryPointSpec &entry,
                const Manifest &manifest, int64_t layers, int32_t batchRows);

} // namespace momac

#endif // MOMAC_RUNTIME_ARTIFACT_STEPINPUTS_H
