#!/usr/bin/env bash
# Builds the GPU bundle: a folder of at most 48 MiB with everything a GPU
# machine (driver, CUDA, a python3; no LLVM, MPI, BLAS or package registry)
# needs to check momac's CUDA target with one command, and the CPU's answers
# to check it against (scripts/gpu_bundle/make_bundle.py says what is in it).
#
#   scripts/gpu-bundle.sh DIR              CUDA artifacts; then, there: DIR/run.sh
#   scripts/gpu-bundle.sh --emulated DIR   cuda-emulated artifacts: DIR/run.sh --emulated here
#   scripts/gpu-bundle.sh --models tiny DIR   the tiny models only (the tests)
#   scripts/gpu-bundle.sh --check-closure DIR checks an existing bundle's closure
#
# The whole bundle takes about 15 minutes on 2 cores (most of it compiling the
# 435M and 1.4B-class artifacts); the tiny one about 2.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/build.sh" >/dev/null
# Debian's python3: PyTorch computes the routers' top-k margins.
exec /usr/bin/python3 "$root/scripts/gpu_bundle/make_bundle.py" "$@"
