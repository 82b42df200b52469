#!/usr/bin/env bash
# Installs the Node tools the end-to-end tests use (package.json here: playwright-core,
# maildev, ws) with `npm ci`, once: later calls find them and return at once. Safe to run
# from tests that ctest starts in parallel (a lock serialises them). Node and npm come
# from the project's setup script when missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
command -v npm >/dev/null || "$here/../../scripts/setup"
exec 9>"$here/.install.lock"
flock 9
if [[ -d node_modules/playwright-core && -d node_modules/maildev && -d node_modules/ws ]] &&
    cmp -s package-lock.json node_modules/.cairn-installed-lock; then
    exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
cp package-lock.json node_modules/.cairn-installed-lock
