#!/usr/bin/env bash
# Builds everything with warnings as errors and runs every test (README: "Run all tests").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/fetch-linux.sh >/dev/null  # the Linux interop guest's kernel (cached)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPOTEMKIN_WERROR=ON >/dev/null
cmake --build build
ctest --test-dir build --output-on-failure -j2 --timeout 300
