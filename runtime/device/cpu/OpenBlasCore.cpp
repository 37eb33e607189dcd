//===- OpenBlasCore.cpp - The OpenBLAS kernels for this CPU ---------------===//

#include "runtime/device/cpu/OpenBlasCore.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSet.h"

#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace momac;

namespace {

/// What chooseOpenBlasCoreBeforeThreads found, for describeOpenBlas.
struct CoreChoice {
  std::string detected; // what OpenBLAS picked by itself ("" if not probed)
  std::string chosen;   // what momarun set OPENBLAS_CORETYPE to, or ""
  bool user = false;    // OPENBLAS_CORETYPE came from the user
};

CoreChoice &coreChoice() {
  static CoreChoice choice;
  return choice;
}

/// The core OpenBLAS picks in a fresh process, or "" when that cannot be
/// told. MOMA_TEST_OPENBLAS_DETECTS makes the child report a CPU model that
/// OpenBLAS does not know (it sets OPENBLAS_CORETYPE there), so that tests
/// on any machine see the fallback path.
std::string probeOpenBlasCore() {
  int fds[2];
  if (::pipe(fds) != 0)
    return "";
  pid_t child = ::fork();
  if (child < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return "";
  }
  if (child == 0) {
    ::close(fds[0]);
    ::setenv("OPENBLAS_NUM_THREADS", "1", 1);
    if (const char *pretend = std::getenv("MOMA_TEST_OPENBLAS_DETECTS"))
      ::setenv("OPENBLAS_CORETYPE", pretend, 1);
    void *blas = ::dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
    auto corename = blas ? reinterpret_cast<const char *(*)()>(
                               ::dlsym(blas, "openblas_get_corename"))
                         : nullptr;
    if (const char *name = corename ? corename() : nullptr)
      (void)!::write(fds[1], name, std::strlen(name));
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string name;
  char buffer[64];
  for (ssize_t got; (got = ::read(fds[0], buffer, sizeof(buffer))) > 0;)
    name.append(buffer, size_t(got));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  return name.size() < 64 ? name : "";
}

} // namespace

std::string momac::cpu::betterOpenBlasCore(const std::string &detected,
                                           bool avx2Fma, bool avx512) {
  // The x86-64 cores of OpenBLAS 0.3.21's DYNAMIC_ARCH whose sgemm uses
  // AVX2 and FMA (or AVX-512). Any other core on a CPU with those units is
  // a fallback.
  static const llvm::StringSet<> modern = {
      "haswell", "zen", "skylakex", "cooperlake", "sapphirerapids",
      "excavator"};
  if (!avx2Fma || detected.empty() || modern.contains(llvm::StringRef(detected).lower()))
    return "";
  return avx512 ? "SkylakeX" : "Haswell";
}

void momac::cpu::chooseOpenBlasCoreBeforeThreads() {
  CoreChoice &choice = coreChoice();
  if (std::getenv("OPENBLAS_CORETYPE")) {
    choice.user = true;
    return;
  }
  choice.detected = probeOpenBlasCore();
  __builtin_cpu_init();
  bool avx2Fma =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  bool avx512 = __builtin_cpu_supports("avx512f") &&
                __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512dq") &&
                __builtin_cpu_supports("avx512vl");
  choice.chosen = betterOpenBlasCore(choice.detected, avx2Fma, avx512);
  if (!choice.chosen.empty())
    ::setenv("OPENBLAS_CORETYPE", choice.chosen.c_str(), 1);
}

std::string momac::cpu::describeOpenBlas(llvm::sys::DynamicLibrary library) {
  auto corename = reinterpret_cast<const char *(*)()>(
      library.getAddressOfSymbol("openblas_get_corename"));
  auto config = reinterpret_cast<const char *(*)()>(
      library.getAddressOfSymbol("openblas_get_config"));
  if (!corename)
    return "";
  // "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH ...": its first two words.
  std::string version = "OpenBLAS";
  if (config) {
    llvm::SmallVector<llvm::StringRef> words;
    llvm::StringRef(config()).split(words, ' ', 2);
    if (words.size() >= 2)
      version = (words[0] + " " + words[1]).str();
  }
  std::string text = version + ", " + corename() + " kernels";
  const CoreChoice &choice = coreChoice();
  if (choice.user)
    text += " (OPENBLAS_CORETYPE)";
  else if (!choice.chosen.empty())
    text += " (set by momarun: by itself OpenBLAS took this CPU for " +
            choice.detected + ")";
  return text;
}
