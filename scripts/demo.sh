#!/usr/bin/env bash
# Builds potemkin and runs the main demo (README: "Run the demo").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build --target potemkin guests
build/potemkin run "${1:-examples/edu.xml}" --timeout 120
