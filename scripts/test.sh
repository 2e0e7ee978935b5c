#!/usr/bin/env bash
# Builds everything with warnings as errors and runs every test (README: "Run all tests").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/fetch-linux.sh >/dev/null  # the Linux interop guest's kernel and modules (cached)
# QEMU >= 10.1 with the vfio-user client, for tests/interop/vfio_user_qemu_test.cpp: built once
# per machine (about 4 min on 2 cores; cached afterwards).
scripts/build-qemu-vfio-user.sh >/dev/null
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPOTEMKIN_WERROR=ON >/dev/null
cmake --build build
ctest --test-dir build --output-on-failure -j2 --timeout 300
