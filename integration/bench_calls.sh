#!/usr/bin/env bash
# `make bench-calls`: installs what is missing (setup.sh says what), then runs the call load tool
# (bench_calls.py: real Prosody, Kamailio and the gateway's release build on loopback) and prints
# its figures. As root it runs in a network namespace that has only loopback. Arguments go to
# bench_calls.py (--sequential N --concurrent M --rate R --hold S).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bash "$HERE/setup.sh"
export XSG_BIN=${XSG_BIN:-$(dirname "$HERE")/target/release/xmpp-sip-gateway}
exec bash "$HERE/loopback_ns.sh" bench_calls.sh "$HERE/.venv/bin/python" "$HERE/bench_calls.py" "$@"
