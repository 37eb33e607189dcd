#!/usr/bin/env bash
# Installs what is missing, builds momac, and compiles the tiny MoMa example
# (4 text + 4 image experts): its report, then its forward pass in the moma
# dialect.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
momac="${MOMAC_BUILD_DIR:-$root/build}/bin/momac"
model="$root/examples/models/tiny/moe_4t4i.json"
"$momac" "$model" --report
echo
"$momac" "$model" --emit=moma
