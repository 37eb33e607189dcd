#!/usr/bin/env bash
# Builds momac, momarun and the tests with AddressSanitizer and
# UndefinedBehaviorSanitizer into build-sanitize/ and runs every test against
# that build (lit, GoogleTest, the fuzzers, e2e against PyTorch), except the
# timing-sensitive learning test and the GPU bundle's test (a bundle is
# built to travel, and its closure check rightly refuses the sanitizers'
# libraries; its report runs valgrind, which cannot run an ASan binary).
# Any sanitizer report fails the run.
# Leak checking is off: LLVM and MLIR keep process-lifetime allocations.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${MOMAC_SANITIZE_BUILD_DIR:-$root/build-sanitize}"
"$root/scripts/setup.sh"
if [ ! -f "$build/build.ninja" ]; then
  launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DMOMAC_SANITIZE=ON "${launcher[@]}"
fi
cmake --build "$build" -j "$(nproc)"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir "$build" --output-on-failure -j "$(nproc)" \
  -E '^(e2e-learning|gpu-bundle)$'
