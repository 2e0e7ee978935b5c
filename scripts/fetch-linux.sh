#!/usr/bin/env bash
# Fetches the Debian 12 kernel the Linux interop guest boots (tests/interop): the newest
# linux-image-6.1.0-*-amd64 that linux-image-amd64 depends on, downloaded with `apt-get download`
# and unpacked with `dpkg-deb -x`. Kept: vmlinuz, and the modules the vfio-user guest loads to
# take interrupts in user space and the nested harness (tests/nested) uses for kernel VFIO and
# KVM, and the nvme driver a Linux guest on potemkin uses (vfio-pci, vfio_iommu_type1, kvm-amd
# and nvme with their dependencies; the package has no
# modules.dep, so each module's own `depends=` field is followed).
#
# Cache: ${XDG_CACHE_HOME:-$HOME/.cache}/potemkin/linux/: vmlinuz, modules/*.ko,
# modules/order (the .ko files in insmod order, dependencies first) and VERSION naming the
# package; a rerun with all of them present does nothing. Prints the path of vmlinuz.
# Override the package with POTEMKIN_LINUX_PACKAGE=linux-image-6.1.0-NN-amd64.
set -euo pipefail

cache="${XDG_CACHE_HOME:-$HOME/.cache}/potemkin/linux"
modules=(vfio-pci vfio_iommu_type1 kvm-amd nvme)
have_all_modules() {
  local m
  for m in "${modules[@]}"; do
    grep -qx "${m//_/-}.ko\|${m//-/_}.ko" "$cache/modules/order" 2>/dev/null || return 1
  done
}
if [ -s "$cache/vmlinuz" ] && [ -s "$cache/VERSION" ] && have_all_modules; then
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

# Modules, dependencies first. Names in `depends=` use - and _ interchangeably.
ko_path() {
  local name="${1//-/_}" f
  while IFS= read -r f; do
    local base="${f##*/}"
    base="${base%.ko}"
    if [ "${base//-/_}" = "$name" ]; then
      echo "$f"
      return 0
    fi
  done < <(find "$work/root/lib/modules" -name '*.ko')
  echo "fetch-linux: $deb has no module $1" >&2
  return 1
}
order=()
add_module() {
  local path deps dep seen
  path="$(ko_path "$1")" || exit 1
  for seen in "${order[@]}"; do [ "$seen" = "$path" ] && return 0; done
  deps="$(strings "$path" | sed -n 's/^depends=//p' | head -n1)"
  for dep in ${deps//,/ }; do add_module "$dep"; done
  order+=("$path")
}
for m in "${modules[@]}"; do add_module "$m"; done
rm -rf "$cache/modules.tmp"
mkdir -p "$cache/modules.tmp"
for path in "${order[@]}"; do
  cp "$path" "$cache/modules.tmp/"
  basename "$path" >>"$cache/modules.tmp/order"
done
rm -rf "$cache/modules"
mv "$cache/modules.tmp" "$cache/modules"

cp "$kernel" "$cache/vmlinuz.tmp"
mv "$cache/vmlinuz.tmp" "$cache/vmlinuz"
echo "$pkg $(basename "$kernel")" >"$cache/VERSION"
echo "$cache/vmlinuz"
