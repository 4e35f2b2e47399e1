#!/usr/bin/env bash
# Make sure PostgreSQL server binaries (initdb, pg_ctl) are installed, for tests/pg.py.
#
# Idempotent: does nothing when initdb is already on PATH or under /usr/lib/postgresql/*/bin.
# Otherwise installs the distribution's `postgresql` package (Debian/Ubuntu, non-interactive;
# the package's own cluster is not needed: the tests start a throwaway one themselves).
# Also makes sure a non-root `postgres` user exists, since PostgreSQL refuses to run as root.
# Skip all of this by pointing BGMODE_TEST_POSTGRES_URL at an existing server instead.
set -euo pipefail

log() { echo "install_postgres: $*"; }

find_initdb() {
    if command -v initdb >/dev/null 2>&1; then
        command -v initdb
        return 0
    fi
    local found
    found=$(ls -1d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$found" ]; then
        echo "$found"
        return 0
    fi
    return 1
}

if [ -n "${BGMODE_TEST_POSTGRES_URL:-}" ]; then
    log "BGMODE_TEST_POSTGRES_URL is set: the tests use that server; nothing to install"
    exit 0
fi

if initdb=$(find_initdb); then
    log "found $initdb ($("$initdb" --version)); nothing to install"
else
    if ! command -v apt-get >/dev/null 2>&1; then
        log "initdb not found and apt-get is not available: install PostgreSQL server binaries" \
            "or set BGMODE_TEST_POSTGRES_URL" >&2
        exit 1
    fi
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    log "initdb not found: installing the 'postgresql' package with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    # the package starts its own cluster on Debian; the tests do not use it
    if command -v pg_lsclusters >/dev/null 2>&1 && command -v pg_ctlcluster >/dev/null 2>&1; then
        pg_lsclusters --no-header 2>/dev/null | while read -r ver name _; do
            $sudo pg_ctlcluster "$ver" "$name" stop >/dev/null 2>&1 || true
        done
    fi
    initdb=$(find_initdb) || { log "installed, but initdb is still missing" >&2; exit 1; }
    log "installed $initdb ($("$initdb" --version))"
fi

if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    log "running as root and no 'postgres' user: creating one (PostgreSQL will not run as root)"
    useradd --system --user-group --no-create-home --shell /usr/sbin/nologin postgres
fi
log "ok: tests/pg.py will start a throwaway cluster with $(dirname "$initdb")"
