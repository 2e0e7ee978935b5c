#!/usr/bin/env bash
# Appends kernel modules to an initramfs: OUT = BASE followed by a second gzip'ed newc archive
# holding MODULES_DIR as /modules (the kernel unpacks concatenated archives one after the
# other). The modules come from the kernel's own package (scripts/fetch-linux.sh), found at
# test time like the kernel, so the CMake-built initramfs stays independent of them.
# Usage: add-modules.sh OUT.cpio.gz BASE.cpio.gz MODULES_DIR
set -euo pipefail
out="$1" base="$2" modules="$3"
if [ ! -s "$modules/order" ]; then
  echo "add-modules: $modules/order missing (run scripts/fetch-linux.sh)" >&2
  exit 1
fi
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/modules"
cp "$modules"/order "$modules"/*.ko "$root/modules/"
cp "$base" "$out.tmp"
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -6 >>"$out.tmp"
mv "$out.tmp" "$out"
