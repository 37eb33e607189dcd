//===- CpuRuntime.cpp - What a CPU artifact links -------------------------===//

#include "compiler/Target/Common/CpuRuntime.h"

/// The CPU runtime archive (momart_*: top-k selection, bf16 GEMM, and the
/// CUDA runtime's interface over host memory that an emulated step's
/// artifact exports) and the FSDP calls inside, the OpenMP runtime,
/// OpenBLAS (the f32 GEMMs), oneDNN (the bf16 GEMMs) and MLIR's C runner
/// utilities (memrefCopy, for copies between strided views) and
/// compiler-rt's builtins.
std::vector<std::string> momac::cpuLinkArguments() {
  std::string libDir = MOMAC_LLVM_LIBRARY_DIR;
  return {
      MOMAC_CPU_RUNTIME_ARCHIVE,
      // The collective calls of a sharded (momac --fsdp) step; linked in
      // only when the step calls them.
      MOMAC_FSDP_RUNTIME_ARCHIVE,
      "-L" + libDir,
      "-lomp",
      "-Wl,-rpath," + libDir,
      "-lmlir_c_runner_utils",
      "-lopenblas",
      // oneDNN, for the bf16 GEMMs only (kept as a dependency only when
      // the archive's momart_gemm_bf16 is linked in). It is named after
      // -lomp on purpose: oneDNN's OpenMP calls then bind to LLVM's libomp
      // (which also exports the GNU OpenMP ABI) before they reach
      // libgomp, so a oneDNN call inside one of our parallel loops sees
      // that loop and runs on its thread instead of starting a second
      // thread pool.
      "-Wl,--as-needed",
      "-ldnnl",
      "-Wl,--no-as-needed",
      "-lm",
      // Last: the conversions LLVM leaves to library calls (f32 -> bf16
      // without AVX512_BF16), taken from the archive only where called.
      MOMAC_COMPILER_RT_BUILTINS};
}
