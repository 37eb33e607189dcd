#!/usr/bin/env bash
# examples/reproduce.sh end to end, short: four runs at equal training FLOPs,
# their table of final losses, and the SVG with one curve per run per panel.
set -euo pipefail
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
log=$(STEPS=${STEPS:-30} "$(dirname "$0")/../../examples/reproduce.sh" "$out")
echo "$log" | tail -8
table=$(echo "$log" | sed -n '/^run /,/^final losses/p')
for run in dense moe_1t1i moe_4t4i upcycled; do
  echo "$table" | grep -qE "^$run +[0-9.]+e\+[0-9]+ +[0-9]+\.[0-9]{4} +[0-9]+\.[0-9]{4} +[0-9]+\.[0-9]{4}$" \
    || { echo "FAIL: no final losses for $run"; exit 1; }
done
# Equal compute: every run's FLOPs within one dense step of the others.
flops=$(echo "$table" | awk 'NR > 1 && $2 ~ /e\+/ { print $2 }')
echo "$flops" | awk 'NR == 1 { lo = hi = $1 } { if ($1 < lo) lo = $1; if ($1 > hi) hi = $1 }
  END { if ((hi - lo) / hi > 0.1) { print "FAIL: FLOPs differ: " lo " to " hi; exit 1 } }'
svg="$out/curves.svg"
test "$(grep -c '<polyline' "$svg")" -eq 12 || { echo "FAIL: expected 12 curves"; exit 1; }
for title in "all tokens" "text tokens" "image tokens"; do
  grep -q ">$title" "$svg" || { echo "FAIL: no panel '$title'"; exit 1; }
done
# The upcycled curve starts with its moe_1t1i stage.
test -s "$out/upcycled/run.json" && grep -q '"continues"' "$out/upcycled/run.json" \
  || { echo "FAIL: the upcycled run does not record its stage 1"; exit 1; }
echo "PASS"
