//===- Escape.cpp - Messages that cannot drive a terminal -----------------===//

#include "lib/support/Escape.h"

#include "llvm/Support/Format.h"
#include "llvm/Support/raw_ostream.h"

std::string momac::escapeControlCharacters(llvm::StringRef text) {
  std::string escaped;
  llvm::raw_string_ostream os(escaped);
  for (unsigned char c : text) {
    if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f)
      os << "\\x" << llvm::format_hex_no_prefix(c, 2);
    else
      os << char(c);
  }
  return escaped;
}
