#!/usr/bin/env bash
# Installs what the integration tests need. Idempotent: does nothing when everything is there.
#  - Debian packages (apt, as root or through sudo): XMPP servers and tools used by the tests
#  - a Python venv in integration/.venv with the pinned packages of requirements.txt
#  - the browser page of the real-browser tests (integration/browser): its npm packages, pinned
#    by package-lock.json, in integration/browser/node_modules, and its bundle (esbuild) in
#    integration/browser/dist/bundle.js
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV=$HERE/.venv
REQ=$HERE/requirements.txt
STAMP=$VENV/.requirements.sha256

# prosody (+lua-event, lua-unbound: its event loop and resolver), ejabberd: the XMPP servers the
# gateway connects to; iproute2: `ip` for the loopback-only network namespace; procps: ps/pgrep.
APT_PACKAGES=(prosody lua-event lua-unbound ejabberd iproute2 procps)
# SIP peers (tests/sip_harness.py): kamailio (registrar/proxy with digest auth; its db_text,
# usrloc, auth_db modules and kamcmd are in this one package); baresip-core (the headless SIP UA
# and its modules: g711, aufile, sndfile, cons, ctrl_tcp; the `baresip` metapackage would only add
# GUI/video recommends); sox (independent cross-check of the recorded tones' frequency).
APT_PACKAGES+=(kamailio baresip-core sox)
# Real-browser calls (tests/test_browser_calls.py): Debian's chromium, run headless with a fake
# microphone; Node.js + npm to install and bundle the page's packages (stanza, esbuild). A Node.js
# that did not come from Debian (e.g. nodesource's, which bundles npm) is used as it is.
APT_PACKAGES+=(chromium)
command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(nodejs npm)

if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi

PY=${PYTHON:-python3}
if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  APT_PACKAGES+=(python3-venv); PY=/usr/bin/python3
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing Debian packages: ${missing[*]} (needed by the integration tests)"
  # no init system here: keep the packages' postinst scripts from starting the distro daemons
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    echo "setup.sh: creating /usr/sbin/policy-rc.d (exit 101) so apt does not start daemons"
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${SUDO[@]}" chmod 755 /usr/sbin/policy-rc.d
  fi
  apt_update() { echo "setup.sh: apt-get update"; "${SUDO[@]}" apt-get update -qq; }
  apt_install() {
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  }
  # package lists missing or more than a day old: refresh first
  [ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ] \
    || apt_update
  apt_install || { echo "setup.sh: apt-get install failed; refreshing the package lists and retrying"
                   apt_update; apt_install; }
fi

want=$(sha256sum < "$REQ" | cut -d' ' -f1)
if ! "$VENV/bin/python" -c '' >/dev/null 2>&1; then
  rm -rf "$VENV"   # missing, or broken (e.g. its base Python went away)
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "setup.sh: installing Python packages into $VENV: $(grep -v '^#' "$REQ" | xargs) (needed by the integration tests)"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"
  echo "$want" > "$STAMP"
fi

# The browser page: `npm ci` (exactly package-lock.json) when node_modules is missing or was
# installed from another lock file; the bundle is rebuilt when a source is newer than it.
BROWSER=$HERE/browser
NPM_STAMP=$BROWSER/node_modules/.xsg-package-lock.sha256
want=$(sha256sum < "$BROWSER/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$NPM_STAMP" 2>/dev/null)" != "$want" ]; then
  echo "setup.sh: installing the browser page's npm packages (stanza, esbuild: integration/browser/package-lock.json) into $BROWSER/node_modules (needed by the browser tests)"
  (cd "$BROWSER" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" > "$NPM_STAMP"
fi
BUNDLE=$BROWSER/dist/bundle.js
if [ ! -s "$BUNDLE" ] || [ -n "$(find "$BROWSER/app.js" "$BROWSER/package-lock.json" -newer "$BUNDLE" 2>/dev/null)" ]; then
  echo "setup.sh: building $BUNDLE (esbuild: app.js + stanza, for the browser tests)"
  (cd "$BROWSER" && npm run --silent build)
fi
