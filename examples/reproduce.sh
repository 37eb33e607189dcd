#!/usr/bin/env bash
# The MoMa paper's comparison, small and visible: dense, moe_1t1i, moe_4t4i
# and a 4t4i upcycled from 1t1i (MODEL_SPEC section 7), the tiny examples,
# trained on one synthetic mixed-modal corpus with equal training FLOPs.
# Writes OUT/curves.svg (loss against training FLOPs, overall and per
# modality) and prints the final losses per modality.
#
#   examples/reproduce.sh [OUT]        (after scripts/build.sh; a few minutes)
#
# STEPS (default 300) is the dense model's step count; every other run gets
# the steps that spend the same training FLOPs (momac --report). The
# upcycled model spends half of them as moe_1t1i, the rest as moe_4t4i.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${MOMAC_BUILD_DIR:-$ROOT/build}/bin
OUT=${1:-$ROOT/reproduce-out}
STEPS=${STEPS:-300}
TINY=$ROOT/examples/models/tiny
BATCH_TOKENS=1024 # train.batch_size 8 x seq_len 128 in every tiny example
mkdir -p "$OUT"

# Mean training FLOPs per token over the modalities (momac --report --json).
train_flops() {
  "$BIN/momac" "$1" --report --json | awk '
    /"train_flops_per_token"/ { inside = 1; next }
    inside && /}/ { inside = 0 }
    inside && !/"dense"/ { gsub(/[",]/, ""); sum += $2; n++ }
    END { printf "%.0f\n", sum / n }'
}

# A tiny example whose LR schedule spans `steps`, compiled into OUT/art-NAME.
compile() { # name example steps
  sed "s/\"total_steps\": [0-9]*/\"total_steps\": $3/" "$TINY/$2.json" \
    > "$OUT/$1.json"
  "$BIN/momac" "$OUT/$1.json" -o "$OUT/art-$1" > /dev/null
}

echo "== corpus"
"$BIN/momarun" corpus "$TINY/dense.json" --out "$OUT/corpus" --synthetic 3000

budget=$(( STEPS * BATCH_TOKENS * $(train_flops "$TINY/dense.json") ))
steps_for() { # example flops-budget
  echo $(( $2 / (BATCH_TOKENS * $(train_flops "$TINY/$1.json")) ))
}

for variant in dense moe_1t1i moe_4t4i; do
  steps=$(steps_for "$variant" "$budget")
  echo "== $variant: $steps steps"
  compile "$variant" "$variant" "$steps"
  "$BIN/momarun" train "$OUT/art-$variant" --data "$OUT/corpus" \
    --steps "$steps" --out "$OUT/$variant" --log-every 100
done

# Upcycling: half the budget as moe_1t1i, then 4t4i from its checkpoint,
# continuing its data with a fresh optimizer and schedule.
stage1=$(steps_for moe_1t1i $(( budget / 2 )))
echo "== upcycled: $stage1 steps of moe_1t1i"
compile upcycled-stage1 moe_1t1i "$stage1"
"$BIN/momarun" train "$OUT/art-upcycled-stage1" --data "$OUT/corpus" \
  --steps "$stage1" --out "$OUT/upcycled-stage1" --log-every 100
spent=$(( stage1 * BATCH_TOKENS * $(train_flops "$TINY/moe_1t1i.json") ))
stage2=$(steps_for moe_4t4i $(( budget - spent )))
echo "== upcycled: $stage2 steps of moe_4t4i"
compile upcycled moe_4t4i "$stage2"
"$BIN/momarun" upcycle --from "$OUT/upcycled-stage1/checkpoint.safetensors" \
  --to "$OUT/art-upcycled" -o "$OUT/upcycled.safetensors"
"$BIN/momarun" train "$OUT/art-upcycled" --data "$OUT/corpus" \
  --steps "$stage2" --out "$OUT/upcycled" --log-every 100 \
  --init "$OUT/upcycled.safetensors" \
  --data-position-from "$OUT/upcycled-stage1/checkpoint.safetensors"

echo "== equal training FLOPs: final losses"
"$BIN/momarun" plot "$OUT/dense" "$OUT/moe_1t1i" "$OUT/moe_4t4i" \
  "$OUT/upcycled" -o "$OUT/curves.svg" --smooth 20
