//===- Failpoint.cpp - Named points where a test can kill the process -----===//

#include "lib/support/Failpoint.h"

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <unistd.h>

using namespace momac;

namespace {

struct Armed {
  std::string point;
  int rank = -1; // any
  long hit = 1;
};

/// MOMA_FAILPOINT, parsed once; empty point: none armed.
const Armed &armed() {
  static const Armed parsed = [] {
    Armed result;
    const char *text = std::getenv("MOMA_FAILPOINT");
    if (!text || !*text)
      return result;
    std::string spec = text;
    if (size_t hash = spec.find('#'); hash != std::string::npos) {
      result.hit = std::max(1L, std::strtol(spec.c_str() + hash + 1, nullptr, 10));
      spec.resize(hash);
    }
    if (size_t at = spec.find('@'); at != std::string::npos) {
      result.rank = int(std::strtol(spec.c_str() + at + 1, nullptr, 10));
      spec.resize(at);
    }
    result.point = spec;
    return result;
  }();
  return parsed;
}

std::atomic<int> defaultRank{-1};
std::atomic<long> hits{0};

} // namespace

void momac::setFailpointRank(int rank) { defaultRank = rank; }

void momac::failpoint(llvm::StringRef point, int rank) {
  const Armed &target = armed();
  if (target.point.empty() || point != target.point)
    return;
  if (rank < 0)
    rank = defaultRank;
  if (target.rank >= 0 && rank != target.rank)
    return;
  if (++hits != target.hit)
    return;
  // Said with write(2): nothing buffered is flushed, as in a real crash.
  std::string message = "momarun: failpoint " + target.point + " on rank " +
                        std::to_string(rank) + ": killing the process\n";
  ssize_t ignored = ::write(2, message.data(), message.size());
  (void)ignored;
  ::raise(SIGKILL);
}
