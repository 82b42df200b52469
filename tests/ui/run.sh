#!/usr/bin/env bash
# Installs the browser-test tooling if missing (playwright-core from npm, Debian's chromium
# via scripts/setup), then runs the inspector tests against the given cairn binary.
# usage: tests/ui/run.sh PATH/TO/cairn
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export CAIRN_BIN=$(realpath "${1:?usage: run.sh PATH/TO/cairn}")
export CAIRN_UI_ARTIFACTS=${CAIRN_UI_ARTIFACTS:-$(dirname "$CAIRN_BIN")/ui-artifacts}
# Debian's chromium (and node) come from the project's idempotent setup script.
if [[ ! -x /usr/bin/chromium ]] || ! command -v npm >/dev/null; then
    "$here/../../scripts/setup"
fi
"$here/install.sh"
cd "$here"
exec node --test --test-concurrency=1 inspector.test.mjs
