//===- Json.h - The one JSON reader of momac and momarun --------*- C++ -*-===//
//
// Every JSON file either tool reads (model descriptions, manifests,
// safetensors headers, shard layouts, metrics logs, run records, prompt and
// corpus JSONL) goes through parseJson: llvm::json's parser recurses once per
// level of nesting, so a hostile file of a hundred thousand '[' would
// overflow the stack; no real file nests more than a few levels, so deeper
// ones are refused before parsing. Errors say where, as editors count.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_LIB_SUPPORT_JSON_H
#define MOMAC_LIB_SUPPORT_JSON_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/JSON.h"

namespace momac {

/// The deepest nesting of objects and lists a JSON text may have.
constexpr int kMaxJsonNesting = 64;

/// llvm::json::parse with the nesting limit; an error reads "line L, column
/// C: invalid JSON: ..." (or "... nested deeper than 64 levels").
llvm::Expected<llvm::json::Value> parseJson(llvm::StringRef text);

} // namespace momac

#endif // MOMAC_LIB_SUPPORT_JSON_H
