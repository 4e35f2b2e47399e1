#!/usr/bin/env bash
# Node.js and the official `openai` npm package for tests/test_node_sdk.py (Debian's nodejs
# and npm when the machine has no node; the package from tests/node/package-lock.json).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "install_node: installing Debian's nodejs and npm"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "install_node: no node/npm and cannot apt-get install them; tests/test_node_sdk.py will skip (fail in CI)" >&2
    exit 0
  fi
fi
if [ ! -d tests/node/node_modules/openai ]; then
  npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
fi
echo "install_node: ok: node $(node --version), openai $(node -p "require('./tests/node/node_modules/openai/package.json').version")"
