#!/usr/bin/env bash
# Fails when a part under src/ includes a part it may not use (ARCHITECTURE.md §2, ground floor
# first): no part includes a part above it, and the transports do not include each other. Each
# offending #include is printed as file:line.
set -uo pipefail
cd "$(dirname "$0")/.."

# part: the parts it may include (besides itself).
declare -A allowed=(
  [common]=""
  [vm]="common"
  [pci]="common vm"
  [hostdev]="common vm pci"
  [sdk]="common vm pci hostdev"
  [inproc]="common vm pci hostdev sdk"
  [vfio_user]="common vm pci hostdev sdk"
  [mpqemu]="common vm pci hostdev sdk"
  [vfio]="common vm pci hostdev sdk"
  [models]="common vm pci hostdev sdk"
  [devices]="common vm pci hostdev"
  [cpu]="common vm"
  [machine]="common vm pci hostdev sdk inproc vfio_user mpqemu vfio models devices cpu"
  [tools]="common vm pci hostdev sdk inproc vfio_user mpqemu vfio models devices cpu machine"
)

status=0
for dir in src/*/; do
  part=$(basename "$dir")
  if [ -z "${allowed[$part]+set}" ]; then
    echo "check-layers: src/$part is not a known part: add it to scripts/check-layers.sh"
    status=1
    continue
  fi
  while IFS=: read -r file line used; do
    [ "$used" = "$part" ] && continue
    case " ${allowed[$part]} " in
      *" $used "*) ;;
      *)
        echo "check-layers: $file:$line: part '$part' includes '$used', which is not below it"
        status=1
        ;;
    esac
  done < <(grep -rnoE '^#include "[a-z_]+/' "$dir" | sed -E 's/#include "([a-z_]+)\/$/\1/')
done
[ $status -eq 0 ] && echo "check-layers: every part includes only parts below it"
exit $status
