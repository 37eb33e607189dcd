//===- Json.cpp - The one JSON reader of momac and momarun ----------------===//

#include "lib/support/Json.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Regex.h"

#include <optional>

using namespace momac;

namespace {

/// Where `text` first nests deeper than kMaxJsonNesting, as an error
/// message; nothing when it does not.
std::optional<std::string> checkNesting(llvm::StringRef text) {
  int depth = 0, line = 1, column = 0;
  bool inString = false, escaped = false;
  for (char c : text) {
    ++column;
    if (c == '\n') {
      ++line;
      column = 0;
    }
    if (inString) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        inString = false;
      continue;
    }
    if (c == '"')
      inString = true;
    else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonNesting)
        return llvm::formatv("line {0}, column {1}: invalid JSON: nested "
                             "deeper than {2} levels",
                             line, column, kMaxJsonNesting)
            .str();
    } else if ((c == ']' || c == '}') && depth > 0)
      --depth;
  }
  return std::nullopt;
}

/// Turns llvm::json's "[3:14, byte=40]: Expected ..." into "line 3, column
/// 14: ...", the form people read in editors.
std::string describeSyntaxError(llvm::Error error) {
  std::string message = llvm::toString(std::move(error));
  llvm::Regex location("^\\[([0-9]+):([0-9]+), byte=[0-9]+\\]: (.*)$");
  llvm::SmallVector<llvm::StringRef, 4> parts;
  if (location.match(message, &parts))
    // llvm::json counts columns from 1, but reports 0 at the very start.
    return ("line " + parts[1] + ", column " +
            (parts[2] == "0" ? llvm::StringRef("1") : parts[2]) +
            ": invalid JSON: " + parts[3])
        .str();
  return "invalid JSON: " + message;
}

} // namespace

llvm::Expected<llvm::json::Value> momac::parseJson(llvm::StringRef text) {
  if (std::optional<std::string> tooDeep = checkNesting(text))
    return llvm::createStringError(llvm::inconvertibleErrorCode(), *tooDeep);
  llvm::Expected<llvm::json::Value> parsed = llvm::json::parse(text);
  if (!parsed)
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   describeSyntaxError(parsed.takeError()));
  return parsed;
}
