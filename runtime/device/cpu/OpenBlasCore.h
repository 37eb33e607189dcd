//===- OpenBlasCore.h - The OpenBLAS kernels for this CPU -------*- C++ -*-===//
//
// CPU artifacts run their f32 GEMMs on OpenBLAS. Debian 12's OpenBLAS 0.3.21
// (built with DYNAMIC_ARCH) picks its kernels from a table of CPU models; on
// a model newer than the table (an Intel Xeon of family 6 model 207, say) it
// falls back to its SSE3 "Prescott" kernels, 4 to 5 times slower than the
// AVX-512 ones the CPU can run. OPENBLAS_CORETYPE, read when the library
// loads, overrides the choice. So before anything loads OpenBLAS, momarun
// asks a child process which kernels it would pick, and when those lack the
// vector units this CPU has, sets OPENBLAS_CORETYPE to the kernels that use
// them. A user's own OPENBLAS_CORETYPE is kept.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_DEVICE_CPU_OPENBLASCORE_H
#define MOMAC_RUNTIME_DEVICE_CPU_OPENBLASCORE_H

#include "llvm/Support/DynamicLibrary.h"

#include <string>

namespace momac::cpu {

/// Probes OpenBLAS in a child process and sets OPENBLAS_CORETYPE when it
/// would fall back to kernels without this CPU's AVX2/FMA or AVX-512. Call
/// once, before any thread starts (it forks and calls setenv) and before
/// OpenBLAS is loaded.
void chooseOpenBlasCoreBeforeThreads();

/// The OpenBLAS kernels for a CPU: `detected` is the core OpenBLAS picks by
/// itself; the result is the core to use instead, or empty to keep it.
/// `avx2Fma` and `avx512` say which vector units the CPU has (avx512: F,
/// BW, DQ and VL, what OpenBLAS's SkylakeX kernels use).
std::string betterOpenBlasCore(const std::string &detected, bool avx2Fma,
                               bool avx512);

/// "OpenBLAS 0.3.21, Zen kernels" for the OpenBLAS that `library` (a
/// model.so) loaded, with why when momarun or the user chose the kernels;
/// empty when it loaded none.
std::string describeOpenBlas(llvm::sys::DynamicLibrary library);

} // namespace momac::cpu

#endif // MOMAC_RUNTIME_DEVICE_CPU_OPENBLASCORE_H
