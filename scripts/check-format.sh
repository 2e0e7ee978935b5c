#!/usr/bin/env bash
# Fails listing every tracked C/C++ file that clang-format would change.
set -uo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "check-format: clang-format not installed"; exit 1; }
bad=()
while IFS= read -r f; do
  clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done < <(git ls-files '*.c' '*.h' '*.cpp' '*.hpp' 2>/dev/null || find src tests bench guests examples -name '*.[ch]' -o -name '*.[ch]pp')
if [ ${#bad[@]} -gt 0 ]; then
  echo "check-format: clang-format would change: ${bad[*]}"
  echo "check-format: run: clang-format -i ${bad[*]}"
  exit 1
fi
echo "check-format: clean"
