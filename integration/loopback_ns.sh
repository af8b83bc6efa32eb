#!/usr/bin/env bash
# loopback_ns.sh LABEL COMMAND...: runs COMMAND in a fresh network namespace that has only
# loopback (as root, with unshare -n), so that nothing it starts can reach another address;
# elsewhere on the host's loopback, saying so. Exit code: COMMAND's. Used by run.sh and
# bench_calls.sh.
set -euo pipefail
label=$1
shift
if [ "$(id -u)" -eq 0 ] && unshare -n true 2>/dev/null; then
  echo "$label: running in a new network namespace (loopback only)"
  exec unshare -n sh -c 'ip link set lo up && exec "$@"' sh "$@"
fi
echo "$label: cannot create a network namespace (needs root and unshare -n);" \
     "running on the host's loopback instead"
exec "$@"
