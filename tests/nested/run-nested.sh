#!/usr/bin/env bash
# The nested harness (docs/nested.md): boots a Debian Linux L1 guest under Debian's QEMU 7.2
# (TCG; q35 with an emulated Intel IOMMU with interrupt remapping, `-cpu max` for AMD SVM) with
# QEMU's edu and nvme as the devices to pass through, and runs the suite inside it, in one boot.
#
# Usage: run-nested.sh BUILD_DIR [SUITE]   (SUITE defaults to tests/nested/suite.txt)
# Environment: POTEMKIN_NESTED_TIMEOUT (seconds for the whole boot, default 1500),
# POTEMKIN_NESTED_KEEP=1 keeps the work directory (initramfs, image, console log).
#
# The initramfs holds busybox, the vfio and kvm modules from the kernel's own package
# (scripts/fetch-linux.sh), and what the suite's `include` lines name at the same absolute
# paths, with the shared libraries `ldd` lists for each ELF executable. Exit status 0 when every
# `run` line passed inside L1; the console is echoed and kept in BUILD_DIR/nested/console.log.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
source_dir="$(cd "$here/../.." && pwd)"
build="$(cd "${1:?usage: run-nested.sh BUILD_DIR [SUITE]}" && pwd)"
suite="${2:-$here/suite.txt}"
qemu="${POTEMKIN_NESTED_QEMU:-qemu-system-x86_64}"
busybox="${POTEMKIN_BUSYBOX:-/bin/busybox}"
limit="${POTEMKIN_NESTED_TIMEOUT:-1500}"

fail() {
  echo "run-nested: $*" >&2
  exit 1
}
[ -r "$suite" ] || fail "no suite file $suite"
[ -x "$busybox" ] || fail "$busybox missing (Debian package busybox-static)"
command -v "$qemu" >/dev/null || fail "$qemu missing (Debian package qemu-system-x86)"
kernel="$("$source_dir/scripts/fetch-linux.sh")"
modules="$(dirname "$kernel")/modules"

out="$build/nested"
mkdir -p "$out"
work="$(mktemp -d "$out/work.XXXXXX")"
if [ "${POTEMKIN_NESTED_KEEP:-0}" = 1 ]; then
  echo "run-nested: keeping $work" >&2
else
  trap 'rm -rf "$work"' EXIT
fi
root="$work/root"
mkdir -p "$root"/{bin,dev,proc,sys,nested,modules}
cp "$busybox" "$root/bin/busybox"
for applet in sh env test ls cat readlink; do ln -s busybox "$root/bin/$applet"; done
install -m 755 "$here/init" "$root/init"
cp "$modules"/order "$modules"/*.ko "$root/modules/"

linux_dir="$(dirname "$kernel")"
expand() { sed -e "s|@BUILD@|$build|g" -e "s|@SOURCE@|$source_dir|g" -e "s|@LINUX@|$linux_dir|g"; }

# Copies one file into the root at its own path; ELF executables are stripped and bring the
# libraries they link (and the dynamic loader) along.
add_file() {
  local f="$1" dest="$root$1"
  [ -e "$dest" ] && return 0
  mkdir -p "$(dirname "$dest")"
  if [ -x "$f" ] && head -c4 "$f" | grep -q 'ELF'; then
    strip -o "$dest" "$f" 2>/dev/null || cp "$f" "$dest"
    chmod 755 "$dest"
    local lib
    while read -r lib; do
      [ -n "$lib" ] && add_lib "$lib"
    done < <(ldd "$f" 2>/dev/null | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p; s/^\t\(\/[^ ]*\) .*/\1/p')
  else
    cp "$f" "$dest"
  fi
}
add_lib() {
  local lib="$1" real
  [ -e "$root$lib" ] && return 0
  real="$(readlink -f "$lib")"
  mkdir -p "$(dirname "$root$lib")"
  cp "$real" "$root$lib"
}
add_path() {
  local p="$1" f
  [ -e "$p" ] || fail "$suite: include $p: no such file"
  if [ -d "$p" ]; then
    while IFS= read -r f; do add_file "$f"; done < <(find "$p" -type f)
  else
    add_file "$p"
  fi
}

: >"$root/nested/suite"
lineno=0
while IFS= read -r line || [ -n "$line" ]; do
  lineno=$((lineno + 1))
  line="$(printf '%s' "$line" | expand)"
  case "$line" in
    '' | '#'*) ;;
    'include '*) add_path "${line#include }" ;;
    'prepare '*)
      echo "run-nested: ${line#prepare }" >&2
      bash -c "${line#prepare }" || fail "$suite:$lineno: prepare failed: ${line#prepare }"
      ;;
    'run '*)
      read -r _ name seconds cmd <<<"$line"
      [[ "$seconds" =~ ^[0-9]+$ ]] && [ -n "$cmd" ] ||
        fail "$suite:$lineno: expected 'run NAME SECONDS COMMAND...'"
      printf '%s\t%s\t%s\n' "$name" "$seconds" "$cmd" >>"$root/nested/suite"
      ;;
    *) fail "$suite:$lineno: unknown line '${line%% *}' (include or run)" ;;
  esac
done <"$suite"

# The nvme's disk: 1 MiB of 512-byte blocks, pattern=lba (guests/nvme): each block starts with
# its LBA (little-endian u64), then byte i is (LBA * 13 + i) & 0xff.
image="$work/nvme.img"
python3 - "$image" <<'PY'
import struct, sys
with open(sys.argv[1], "wb") as f:
    for lba in range(2048):
        f.write(struct.pack("<Q", lba) + bytes((lba * 13 + i) & 0xFF for i in range(8, 512)))
PY

edu=0000:00:03.0
nvme=0000:00:04.0
cat >"$root/nested/env" <<ENV
export POTEMKIN_NESTED=1
export POTEMKIN_NESTED_EDU=$edu
export POTEMKIN_NESTED_NVME=$nvme
export POTEMKIN_NESTED_NVME_SERIAL=potemkin-nested
export POTEMKIN_NESTED_DEVICES="$edu $nvme"
ENV

(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -1 >"$work/initramfs.cpio.gz"
echo "run-nested: initramfs $(du -h "$work/initramfs.cpio.gz" | cut -f1)," \
  "$(grep -c . "$root/nested/suite") entries; booting $(basename "$kernel") under $qemu" >&2

log="$out/console.log"
status=0
# The Intel IOMMU comes first so it covers the devices after it; interrupt remapping is what
# lets vfio_iommu_type1 accept MSI without allow_unsafe_interrupts (docs/nested.md). One CPU:
# with two, L1 froze in 6 of 11 boots that ran KVM guests (one L1 CPU stopped taking
# interrupts; TCG's nested SVM, docs/cpu-engine.md); with one, never.
timeout --foreground -k 10 "$limit" "$qemu" -accel tcg -machine q35,kernel-irqchip=split \
  -cpu max -smp 1 -m 2048 -nodefaults -nographic -no-reboot -serial stdio \
  -device intel-iommu,intremap=on,caching-mode=on \
  -device edu,addr=03.0 \
  -drive "file=$image,if=none,id=nvmedisk,format=raw" \
  -device "nvme,drive=nvmedisk,serial=potemkin-nested,addr=04.0" \
  -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
  -kernel "$kernel" -initrd "$work/initramfs.cpio.gz" \
  -append "console=ttyS0 panic=-1 quiet intel_iommu=on iommu=pt" </dev/null |
  tee "$log" || status=$?
# isa-debug-exit: QEMU's status is 2 * (failed entries) + 1.
if [ "$status" -eq 124 ]; then
  fail "L1 did not finish within ${limit}s (console: $log)"
fi
summary="$(grep -a '^nested: RESULT' "$log" | tail -n1 || true)"
[ -n "$summary" ] || fail "L1 ended (QEMU status $status) without a result line (console: $log)"
echo "run-nested: ${summary#nested: }; QEMU status $status" >&2
[ "$status" -eq 1 ] || exit 1
