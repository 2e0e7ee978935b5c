#!/usr/bin/env bash
# Builds the Linux interop guest's initramfs (and the nested harness's L2 one): busybox
# (static), /init and the static test programs, as a gzip'ed newc cpio archive. Every PROGRAM
# after BUSYBOX is installed at / too.
# Usage: make-initramfs.sh OUT.cpio.gz EDU_USER INIT [BUSYBOX [PROGRAM...]]
set -euo pipefail
out="$1" edu_user="$2" init="$3" busybox="${4:-/bin/busybox}"
shift $(($# < 4 ? $# : 4))
if [ ! -x "$busybox" ]; then
  echo "make-initramfs: $busybox missing (Debian package busybox-static)" >&2
  exit 1
fi
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys}
cp "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
install -m 755 "$init" "$root/init"
install -m 755 "$edu_user" "$root/edu_user"
for program in "$@"; do install -m 755 "$program" "$root/$(basename "$program")"; done
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -6 >"$out.tmp"
mv "$out.tmp" "$out"
