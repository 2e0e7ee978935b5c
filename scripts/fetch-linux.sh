#!/usr/bin/env bash
# Fetches the Debian 12 kernel the Linux interop guest boots (tests/interop): the newest
# linux-image-6.1.0-*-amd64 that linux-image-amd64 depends on, downloaded with `apt-get download`
# and unpacked with `dpkg-deb -x`. Only vmlinuz is kept (the guest loads no modules).
#
# Cache: ${XDG_CACHE_HOME:-$HOME/.cache}/potemkin/linux/vmlinuz (plus VERSION naming the
# package); a rerun with the kernel present does nothing. Prints the path of vmlinuz.
# Override the package with POTEMKIN_LINUX_PACKAGE=linux-image-6.1.0-NN-amd64.
set -euo pipefail

cache="${XDG_CACHE_HOME:-$HOME/.cache}/potemkin/linux"
if [ -s "$cache/vmlinuz" ] && [ -s "$cache/VERSION" ]; then
  echo "$cache/vmlinuz"
  exit 0
fi
mkdir -p "$cache"

find_package() {
  apt-cache depends linux-image-amd64 2>/dev/null |
    sed -n 's/^ *Depends: \(linux-image-6\.1\.0-[0-9]*-amd64\)$/\1/p' | head -n1
}
pkg="${POTEMKIN_LINUX_PACKAGE:-$(find_package)}"
if [ -z "$pkg" ]; then
  # No package lists yet (a fresh container): refresh them if we may.
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq >&2
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo apt-get update -qq >&2
  fi
  pkg="$(find_package)"
fi
if [ -z "$pkg" ]; then
  echo "fetch-linux: cannot find linux-image-6.1.0-*-amd64 (apt-cache depends linux-image-amd64);" \
    "run apt-get update, or set POTEMKIN_LINUX_PACKAGE" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"  # apt-get download drops privileges to _apt when it can
echo "fetch-linux: downloading $pkg" >&2
(cd "$work" && apt-get download -q "$pkg" >&2)
deb="$(ls "$work"/*.deb)"
dpkg-deb -x "$deb" "$work/root"
kernel="$(ls "$work"/root/boot/vmlinuz-* | head -n1)"
if [ ! -s "$kernel" ]; then
  echo "fetch-linux: $deb holds no /boot/vmlinuz-*" >&2
  exit 1
fi
cp "$kernel" "$cache/vmlinuz.tmp"
mv "$cache/vmlinuz.tmp" "$cache/vmlinuz"
echo "$pkg $(basename "$kernel")" >"$cache/VERSION"
echo "$cache/vmlinuz"
