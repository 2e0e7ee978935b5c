#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with clang, ASan and UBSan in build-fuzz/ and runs each
# over its committed seed corpus (fuzz/corpus/<name>/) for FUZZ_SECONDS (default 30) seconds.
# New inputs go to build-fuzz/corpus/<name>/ (not committed); a crash stops the run with the
# reproducer in build-fuzz/crash-<name>-*: add it to fuzz/corpus/<name>/ once fixed, and a
# regression test next to the code. Usage: scripts/fuzz.sh [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-30}"
build="${FUZZ_BUILD_DIR:-build-fuzz}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
  -DCMAKE_CXX_COMPILER=clang++ -DPOTEMKIN_FUZZ=ON -DPOTEMKIN_BUILD_TESTS=OFF \
  -DPOTEMKIN_BUILD_BENCH=OFF -DPOTEMKIN_BUILD_GUESTS=OFF >/dev/null
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for d in fuzz/corpus/*/; do targets+=("$(basename "$d")"); done
fi
cmake --build "$build" --target "${targets[@]/#/fuzz_}"
status=0
for t in "${targets[@]}"; do
  mkdir -p "$build/corpus/$t"
  log="$build/fuzz-$t.log"
  # -timeout: one input taking longer than 10 s is a hang, reported like a crash.
  if "$build/fuzz/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$build/crash-$t-" -print_final_stats=1 \
      "$build/corpus/$t" "fuzz/corpus/$t" >"$log" 2>&1; then
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
    echo "fuzz: $t: ${runs:-?} runs in ${seconds}s, no crash"
  else
    echo "fuzz: $t FAILED (log: $log; reproducer: $(ls "$build"/crash-"$t"-* 2>/dev/null | head -n1))" >&2
    grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error)' "$log" | head -n5 >&2 || true
    status=1
  fi
done
exit "$status"
