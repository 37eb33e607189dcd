#!/usr/bin/env bash
# Installs every Debian package momac needs. Idempotent and non-interactive:
# when everything is already installed it does nothing (no apt-get update).
set -euo pipefail

packages=(
  # compiler: LLVM/MLIR 22 (libMLIR.so, mlir-tblgen) and the lit tools
  llvm-22-dev libmlir-22-dev mlir-22-tools llvm-22-tools
  # OpenMP runtime for the parallel loops of compiled kernels; compiler-rt's
  # builtins (f32 -> bf16 conversions on CPUs without AVX512_BF16)
  libomp-22-dev libclang-rt-22-dev
  # build
  cmake ninja-build ccache g++ git
  # unit tests
  libgtest-dev libgmock-dev
  # CPU GEMMs and collectives (runtime)
  libopenblas-dev libdnnl-dev libopenmpi-dev openmpi-bin
  # the PyTorch reference used by the end-to-end tests, and xxh3 for the
  # checkpoint tests' forged shard sets (tests only)
  python3 python3-torch python3-numpy python3-xxhash
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

echo "setup: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
