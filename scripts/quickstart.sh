#!/usr/bin/env bash
# Installs what is missing, builds momac, and runs the main job on the tiny
# MoMa example (4 text + 4 image experts): its report, then compiling it,
# generating a synthetic mixed-modal corpus, and training it on the CPU with
# a progress bar; metrics and checkpoints land in runs/tiny-moe_4t4i/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
bin="${MOMAC_BUILD_DIR:-$root/build}/bin"
model="$root/examples/models/tiny/moe_4t4i.json"
work="$root/runs/tiny-moe_4t4i"
mkdir -p "$work"
"$bin/momac" "$model" --report
echo
"$bin/momac" "$model" -o "$work/artifact"
"$bin/momarun" corpus "$model" --out "$work/corpus" --synthetic 2000
OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" \
  "$bin/momarun" train "$work/artifact" --data "$work/corpus" --steps 300 \
  --out "$work/run"
"$bin/momarun" eval "$work/artifact" --weights "$work/run/checkpoint.safetensors" \
  --data "$work/corpus" --batches 20
