#!/usr/bin/env bash
# The GPU bundle's one command (built by scripts/gpu-bundle.sh): checks
# momac's CUDA target on this machine's GPU and writes $OUT/gpu-report.md,
# $OUT/gpu-report.json and $OUT/gpu-run.log (OUT defaults to ./gpu-report).
# It never stops at the first failure; it exits 1 if any check failed.
#
#   ./run.sh                 on a GPU machine (about 6 minutes on an H100)
#   ./run.sh --emulated      the same checks on this CPU, for a bundle built
#                            with --emulated (ctest gpu-bundle-emulated)
#   ./run.sh --budget S      stop starting new checks after S seconds
#
# It needs only what the machine has: the NVIDIA driver's libcuda, CUDA's
# libraries (cudart, cuBLAS, cuBLASLt, NCCL) from the toolkit or from
# Python's nvidia-* packages, found here and printed, and a python3
# (with PyTorch for the speed comparison).
set -u
here="$(cd "$(dirname "$0")" && pwd)"
out="${OUT:-$PWD/gpu-report}"
mkdir -p "$out"
log="$out/gpu-run.log"
: > "$log"
say() { echo "run.sh: $*" | tee -a "$log"; }

# Python: one with PyTorch when there is one (the eager comparison), else
# any python3 (every other check needs only the standard library).
python=""
torch_python=""
for candidate in python3 /opt/torch/.venv/bin/python3 /usr/bin/python3; do
  command -v "$candidate" >/dev/null 2>&1 || continue
  [ -n "$python" ] || python="$(command -v "$candidate")"
  if "$candidate" -c "import torch" >/dev/null 2>&1; then
    torch_python="$(command -v "$candidate")"
    break
  fi
done
[ -n "$torch_python" ] && python="$torch_python"
if [ -z "$python" ]; then
  say "no python3 on this machine: cannot run the checks"
  exit 1
fi
say "python: $python${torch_python:+ (with PyTorch)}"

# CUDA's libraries: the first directory that has each, among the toolkit's
# and the Python packages' (nvidia/*/lib); the driver's libcuda from the
# loader's cache or the driver's folder.
site_dirs="$("$python" -c 'import site, sys; print(" ".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null)"
search=()
for dir in ${CUDA_HOME:+$CUDA_HOME/lib64} /usr/local/cuda/lib64 \
           /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib \
           /usr/local/nvidia/lib64 /usr/local/nvidia/lib \
           /usr/lib/x86_64-linux-gnu /usr/lib64; do
  [ -d "$dir" ] && search+=("$dir")
done
for site in $site_dirs; do
  [ -d "$site/nvidia" ] || continue
  while IFS= read -r dir; do search+=("$dir"); done \
    < <(find "$site/nvidia" -maxdepth 3 -type d -name lib 2>/dev/null | sort)
done
library_path=""
libraries=""
for name in libcuda.so.1 libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libnccl.so.2; do
  found=""
  for dir in "${search[@]}"; do
    if [ -e "$dir/$name" ]; then found="$dir"; break; fi
  done
  if [ -z "$found" ] && [ "$name" = libcuda.so.1 ]; then
    found="$(ldconfig -p 2>/dev/null | awk -v n="$name" '$1 == n {print $NF; exit}' | xargs -r dirname)"
  fi
  if [ -n "$found" ]; then
    say "$name: $found/$name"
    libraries="$libraries $name=$found/$name"
    case ":$library_path:" in *":$found:"*) ;; *) library_path="$library_path${library_path:+:}$found" ;; esac
  else
    say "$name: not found"
    libraries="$libraries $name=missing"
  fi
done
export LD_LIBRARY_PATH="$library_path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export MOMA_BUNDLE_LIBRARIES="${libraries# }"
export MOMA_TORCH_PYTHON="$torch_python"
export PYTHONUNBUFFERED=1
# compute-sanitizer ships with the toolkit.
export PATH="$PATH:/usr/local/cuda/bin"

"$python" "$here/check/gpu_report.py" --bundle "$here" --out "$out" "$@" 2>&1 | tee -a "$log"
exit "${PIPESTATUS[0]}"
