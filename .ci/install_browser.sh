#!/usr/bin/env bash
# Debian's Chromium for tests/test_dashboard.py (driven by Playwright for Python through
# executable_path; Playwright's own browser downloads are never used).
#
# Idempotent: does nothing when /usr/bin/chromium (or $BGMODE_TEST_CHROMIUM) exists. Otherwise
# installs Debian's `chromium` package with apt-get (as root, or through sudo). Without either,
# the dashboard tests skip (and fail under CI=true).
set -euo pipefail

log() { echo "install_browser: $*"; }
chromium="${BGMODE_TEST_CHROMIUM:-/usr/bin/chromium}"

if [ -x "$chromium" ]; then
    log "found $chromium ($("$chromium" --version 2>/dev/null | head -n 1)); nothing to install"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    log "$chromium not found and apt-get is not available: tests/test_dashboard.py will skip (fail in CI)" >&2
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        log "$chromium not found and not root (no sudo): tests/test_dashboard.py will skip (fail in CI)" >&2
        exit 0
    fi
    sudo="sudo"
fi
log "installing Debian's chromium with apt-get"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
[ -x "$chromium" ] || { log "installed, but $chromium is still missing" >&2; exit 1; }
log "ok: $("$chromium" --version 2>/dev/null | head -n 1)"
