#!/usr/bin/env bash
# Runs the integration tests: installs what they need (setup.sh), then pytest over tests/ against
# real Prosody/ejabberd servers and the gateway binary ($XSG_BIN, default target/debug/...).
# As root, pytest runs in a fresh network namespace that has only loopback, so nothing can leave
# the machine. Extra arguments go to pytest (e.g. -k restart, -x, tests/test_component.py).
# Exit code: pytest's; "no tests collected" (5) counts as a failure.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")

bash "$HERE/setup.sh"

XSG_BIN=${XSG_BIN:-$REPO/target/debug/xmpp-sip-gateway}
case $XSG_BIN in /*) ;; *) XSG_BIN=$PWD/$XSG_BIN ;; esac
if [ ! -x "$XSG_BIN" ]; then
  echo "run.sh: gateway binary $XSG_BIN does not exist: build it with cargo build (or set XSG_BIN)" >&2
  exit 1
fi
export XSG_BIN
# The media bridge's JSON driver (cargo build --example bridge_driver) for test_media_bridge.py.
XSG_BRIDGE_DRIVER=${XSG_BRIDGE_DRIVER:-$REPO/target/debug/examples/bridge_driver}
export XSG_BRIDGE_DRIVER

args=("$@")
has_path=0
for a in "$@"; do
  case $a in -*) ;; *) [ -e "${a%%::*}" ] && has_path=1 ;; esac
done
[ $has_path -eq 1 ] || args+=("$HERE/tests")
cmd=("$HERE/.venv/bin/python" -m pytest -c "$HERE/pytest.ini" --rootdir "$HERE" "${args[@]}")

rc=0
bash "$HERE/loopback_ns.sh" "run.sh (pytest)" "${cmd[@]}" || rc=$?
if [ $rc -eq 5 ]; then
  echo "run.sh: pytest collected no tests: failing" >&2
  rc=1
fi
exit $rc
