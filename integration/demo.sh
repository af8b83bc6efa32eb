#!/usr/bin/env bash
# `make demo`: installs what is missing (setup.sh says what), then runs demo.py.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bash "$HERE/setup.sh"
export XSG_BIN=${XSG_BIN:-$(dirname "$HERE")/target/debug/xmpp-sip-gateway}
exec "$HERE/.venv/bin/python" "$HERE/demo.py"
