#!/usr/bin/env bash
# ThreadSanitizer over momarun's runtime: builds momarun and the runtime's
# GoogleTest units with -fsanitize=thread into build-tsan/, runs the units
# (alone and, for the communicator, under mpirun -np 2), then momarun itself
# on a tiny model: the parallel weight init, one-rank training, and FSDP on
# two ranks (MPI's non-blocking collectives and the liveness pings behind
# the bounded waits). Any data race fails the run. The artifacts come from
# the regular build's momac (scripts/build.sh): the compiler is not under
# test, and the compiled steps' OpenMP loops run in libomp, which TSan does
# not see into (ignore_noninstrumented_modules).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${MOMAC_TSAN_BUILD_DIR:-$root/build-tsan}"
regular="${MOMAC_BUILD_DIR:-$root/build}"
"$root/scripts/setup.sh"
"$root/scripts/build.sh" >/dev/null
if [ ! -f "$build/build.ninja" ]; then
  launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DMOMAC_SANITIZE_THREAD=ON "${launcher[@]}" >/dev/null
fi
units=(momac-unittests momac-safetensors-unittests momac-data-unittests
       momac-artifact-unittests momac-device-unittests momac-comm-unittests
       momac-train-unittests)
cmake --build "$build" -j "$(nproc)" --target momarun momarun-mpi "${units[@]}"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:ignore_noninstrumented_modules=1"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
for unit in "${units[@]}"; do
  echo "tsan: $unit"
  "$build/bin/$unit" --gtest_brief=1
done
echo "tsan: momac-comm-unittests on 2 ranks"
mpirun --oversubscribe -np 2 "$build/bin/momac-comm-unittests" --gtest_brief=1

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
model="$root/examples/models/tiny/moe_4t4i.json"
"$regular/bin/momac" "$model" -o "$work/art"
"$regular/bin/momac" "$model" --fsdp -o "$work/fsdp"
momarun="$build/bin/momarun"
echo "tsan: momarun init, corpus, train (1 rank), train (FSDP, 2 ranks)"
"$momarun" init "$work/art" -o "$work/w.safetensors"
"$momarun" corpus "$model" --out "$work/data" --synthetic 40
OMP_NUM_THREADS=2 "$momarun" train "$work/art" --data "$work/data" --steps 3 \
  --out "$work/run" --checkpoint-every 2
OMP_NUM_THREADS=1 mpirun --oversubscribe -np 2 "$momarun" train "$work/fsdp" \
  --data "$work/data" --steps 3 --out "$work/sharded" --checkpoint-every 2
echo "tsan: no data race reported"
