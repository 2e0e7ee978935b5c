#!/usr/bin/env bash
# Builds a qemu-system-x86_64 with QEMU's vfio-user client (`-device vfio-user-pci`, QEMU >= 10.1)
# from Debian's `qemu` source package, for the interop tests (tests/interop, docs/interop.md).
# Debian 12 ships QEMU 7.2, which has no vfio-user client.
#
# Nothing on the system is changed except the build dependencies (installed by
# scripts/setup.sh): the newer source package and trixie's meson come through a private apt
# configuration kept in the cache directory, whose mirror is the one the machine's own apt
# sources name (no host is written here).
#
# Cache: ${XDG_CACHE_HOME:-$HOME/.cache}/potemkin/qemu-vfio-user/ holds qemu-system-x86_64
# and VERSION; a rerun with both present only prints the binary's path. Run the binary with
# `-L /usr/share/seabios -L /usr/share/qemu` (Debian's seabios and qemu-system-data).
# Override the source version with POTEMKIN_QEMU_SOURCE_VERSION (a Debian version such as
# 1:10.2.2+ds-1); by default the pinned version below, else the newest >= 10.1 that downloads.
set -euo pipefail

pinned="1:10.2.2+ds-1"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/potemkin/qemu-vfio-user"
if [ -x "$cache/qemu-system-x86_64" ] && [ -s "$cache/VERSION" ]; then
  echo "$cache/qemu-system-x86_64"
  exit 0
fi
mkdir -p "$cache"
say() { echo "build-qemu-vfio-user: $*" >&2; }

# The mirror: the first Debian archive URI of the machine's apt sources (deb822 or one-line).
mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' "$f"
  done
}
uri="$(mirror | grep -m1 -E '/debian/?$' || true)"
if [ -z "$uri" ]; then
  say "no Debian archive found in /etc/apt/sources.list{,.d} to take the source package from"
  exit 1
fi

apt_dir="$cache/apt"
mkdir -p "$apt_dir/etc" "$apt_dir/state/lists/partial" "$apt_dir/cache/archives/partial"
cat >"$apt_dir/etc/sources.list" <<EOF
deb-src $uri sid main
deb $uri trixie main
EOF
cat >"$apt_dir/apt.conf" <<EOF
Dir::Etc::sourcelist "$apt_dir/etc/sources.list";
Dir::Etc::sourceparts "/nonexistent";
Dir::State "$apt_dir/state";
Dir::State::status "/var/lib/dpkg/status";
Dir::Cache "$apt_dir/cache";
APT::Sandbox::User "root";
EOF
export APT_CONFIG="$apt_dir/apt.conf"
say "package lists from $uri (private apt configuration in $apt_dir)"
apt-get update -qq >&2

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The source: the pinned version, else the newest offered version >= 10.1 that downloads.
versions() {
  if [ -n "${POTEMKIN_QEMU_SOURCE_VERSION:-}" ]; then
    echo "$POTEMKIN_QEMU_SOURCE_VERSION"
    return
  fi
  echo "$pinned"
  apt-cache madison qemu | awk -F'|' '$3 ~ /Sources/ {gsub(/ /, "", $2); print $2}' |
    sort -u -r -V | awk -F'[:.+-]' '($2 > 10) || ($2 == 10 && $3 >= 1)'
}
version=""
for v in $(versions); do
  if (cd "$work" && apt-get source -qq --download-only "qemu=$v" >&2); then
    version="$v"
    break
  fi
  say "qemu $v did not download; trying the next"
done
if [ -z "$version" ]; then
  say "no qemu source package >= 10.1 could be downloaded from $uri"
  exit 1
fi
say "building qemu $version"
(cd "$work" && dpkg-source -q --no-check -x ./*.dsc src >&2)

# meson >= 1.5 (Debian 12 has 1.0): trixie's package is architecture-independent Python.
(cd "$work" && apt-get download -qq meson >&2)
dpkg-deb -x "$work"/meson_*.deb "$work/meson"
# configure's Python venv sees it through PYTHONPATH.
export PYTHONPATH="$work/meson/usr/lib/python3/dist-packages${PYTHONPATH:+:$PYTHONPATH}"

mkdir -p "$work/build"
(cd "$work/build" && "$work/src/configure" \
  --target-list=x86_64-softmmu --without-default-features --enable-tcg --enable-fdt=system \
  --disable-docs --disable-werror --disable-download --disable-tools --disable-guest-agent \
  --disable-install-blobs >&2)
ninja -C "$work/build" -j"$(nproc)" qemu-system-x86_64 >&2
if ! "$work/build/qemu-system-x86_64" -device help 2>/dev/null | grep -q '"vfio-user-pci"'; then
  say "the built qemu-system-x86_64 has no vfio-user-pci device"
  exit 1
fi
cp "$work/build/qemu-system-x86_64" "$cache/qemu-system-x86_64.tmp"
mv "$cache/qemu-system-x86_64.tmp" "$cache/qemu-system-x86_64"
echo "qemu $version" >"$cache/VERSION"
echo "$cache/qemu-system-x86_64"
