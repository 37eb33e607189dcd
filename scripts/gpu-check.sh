#!/usr/bin/env bash
# The CUDA target on a real GPU, in one go (issue 9): builds what it needs
# with CUDA, runs the CUDA runtime's tests, compares `momarun grad` on the
# GPU with the CPU artifact for the tiny variants, trains 20 steps, trains
# a sharded (--fsdp) step on one rank over NCCL (issue 10), times training on
# bench-tiny, small90 and a 435M-class moe_4t4i at seq_len 4096, and prints
# one summary table; then times the steps' bf16 GEMMs on cuBLAS against
# cuBLASLt. Without an NVIDIA GPU it says so and exits 0.
#
#   scripts/gpu-check.sh            # about 5-8 minutes on an H200 machine
#   GPU_CHECK_SKIP_435M=1 scripts/gpu-check.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-check: no NVIDIA GPU on this machine (nvidia-smi finds none); nothing to check"
  exit 0
fi
nvidia-smi -L

# Build only what the check runs, with CUDA, in its own build directory.
build="${MOMAC_GPU_BUILD_DIR:-$root/build-gpu}"
export PATH="/usr/local/cuda/bin:$PATH"
if [ ! -f "$build/build.ninja" ]; then
  launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DMOMAC_ENABLE_CUDA=ON "${launcher[@]}" > "$build.configure.log"
fi
time cmake --build "$build" -j "$(nproc)" --target momac momarun momac-cuda-unittests \
  momac-bench-cublas \
  > "$build.build.log" || { tail -40 "$build.build.log"; exit 1; }
grep -q "MOMAC_ENABLE_CUDA:BOOL=ON" "$build/CMakeCache.txt" || {
  echo "gpu-check: CUDA was not found when configuring $build"; exit 1; }

"$build/bin/momac-cuda-unittests" --gtest_brief=1
status=0
MOMAC_BUILD_DIR="$build" python3 "$root/scripts/gpu_check.py" || status=1

# The bf16 GEMMs of small90 and 435M steps: the call the runtime makes
# (cublasGemmStridedBatchedEx) against cuBLASLt, heuristic and best of 8
# (bench/cublas_gemm.cpp): where cuBLASLt is faster, by how much.
"$build/bin/momac-bench-cublas" 20 || status=1

# Where Debian's PyTorch is, the e2e gradient tests also run on CUDA
# artifacts, against the PyTorch reference (test/e2e).
if /usr/bin/python3 -c "import torch" 2>/dev/null; then
  if (cd "$root/test/e2e" && MOMAC_E2E_TARGET=cuda MOMAC_BUILD_DIR="$build" \
        timeout 180 /usr/bin/python3 -m unittest -q \
        test_momarun.CompiledGradMatchesReference); then
    echo "gpu-check: e2e CompiledGradMatchesReference on CUDA artifacts: ok"
  else
    echo "gpu-check: e2e CompiledGradMatchesReference on CUDA artifacts: FAILED"
    status=1
  fi
else
  echo "gpu-check: no PyTorch for /usr/bin/python3: e2e tests on CUDA skipped"
fi
exit $status
