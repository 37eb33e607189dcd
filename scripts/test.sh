#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: lit (FileCheck) tests
# of momac and moma-opt, and the GoogleTest units, through ctest.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
ctest --test-dir "${MOMAC_BUILD_DIR:-$root/build}" --output-on-failure -j "$(nproc)"
