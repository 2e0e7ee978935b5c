#!/usr/bin/env bash
# Installs the Debian 12 packages potemkin builds and tests with. As root it runs apt-get;
# with password-less sudo it uses that; otherwise it prints exactly what is missing and the
# command that would install it.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  gcc-multilib                 # 32-bit guests (gcc -m32)
  libunicorn-dev               # the embedded CPU engine
  libpugixml-dev               # VM configuration (XML)
  libcli11-dev                 # command line
  libfmt-dev                   # formatting and logging
  nlohmann-json3-dev           # JSON (vfio-user capabilities)
  libgtest-dev libgmock-dev    # tests
  libbenchmark-dev             # benchmarks
  clang-format
  clang libclang-rt-14-dev     # fuzz targets (libFuzzer) and sanitizer runtimes
  pci.ids                      # names for `potemkin probe`
  qemu-system-x86 qemu-utils   # interop peer: x-remote hosts QEMU's models, x-pci-proxy-dev
  busybox-static cpio          # the Linux interop guest's initramfs
  seabios                      # firmware for the QEMU >= 10.1 built by build-qemu-vfio-user.sh
  libglib2.0-dev libpixman-1-dev libfdt-dev flex bison python3-venv  # building that QEMU
  python3-distlib python3-setuptools dpkg-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo"
fi
if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: missing Debian packages: ${missing[*]}" >&2
  echo "setup: run as root, or: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
