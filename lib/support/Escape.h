//===- Escape.h - Messages that cannot drive a terminal ---------*- C++ -*-===//
//
// Error messages quote their input (file names, JSON keys, token text), and
// input can hold terminal control sequences: printed raw, ESC [2J clears the
// user's screen and ESC ]... rewrites their window title. Every message the
// tools print goes through escapeControlCharacters first.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_LIB_SUPPORT_ESCAPE_H
#define MOMAC_LIB_SUPPORT_ESCAPE_H

#include "llvm/ADT/StringRef.h"

#include <string>

namespace momac {

/// `text` with every control character but newline and tab (C0, DEL) as
/// \xNN; everything else, UTF-8 included, unchanged.
std::string escapeControlCharacters(llvm::StringRef text);

} // namespace momac

#endif // MOMAC_LIB_SUPPORT_ESCAPE_H
