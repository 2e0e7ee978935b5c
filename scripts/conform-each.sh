#!/usr/bin/env bash
# Runs every `potemkin conform` check on its own, against a freshly started server each time:
# for servers that exit or stop accepting after one bad client (libvfio-user's samples), so one
# check's damage does not fail the checks after it.
#
#   scripts/conform-each.sh POTEMKIN SOCKET -- SERVER-COMMAND...
#   scripts/conform-each.sh build/potemkin /tmp/gpio.sock -- /tmp/libvfio-user/build/samples/gpio-pci-idio-16 /tmp/gpio.sock
#
# Prints the table (one row per check; connect.discovery rows left out) and exits with the
# number of failed checks (at most 125). The server's output goes to SOCKET.log.
set -uo pipefail
if [ $# -lt 4 ] || [ "$3" != "--" ]; then
  echo "usage: $0 POTEMKIN SOCKET -- SERVER-COMMAND..." >&2
  exit 126
fi
potemkin=$1 sock=$2
shift 3
: > "$sock.log"
failures=0
first=1
for name in $("$potemkin" conform --list | awk '{print $1}'); do
  rm -f "$sock"
  "$@" >> "$sock.log" 2>&1 &
  server=$!
  for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.05; done
  out=$("$potemkin" conform --only "$name" "vfio-user:$sock")
  if [ $first = 1 ]; then echo "$out" | head -1; first=0; fi
  row=$(echo "$out" | grep -E "^$name ")
  [ -n "$row" ] || row="$name  (no result: $(echo "$out" | grep -E '^connect.discovery'))"
  echo "$row"
  case "$row" in *" fail "*) failures=$((failures + 1)) ;; esac
  kill "$server" 2>/dev/null
  wait "$server" 2>/dev/null
done
rm -f "$sock"
echo "failed: $failures"
exit $((failures > 125 ? 125 : failures))
