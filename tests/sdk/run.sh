#!/usr/bin/env bash
# The SDK suite: real Inngest SDK apps (tests/sdk/app.mjs, the `inngest` npm package)
# against the given cairn binary on one backend, in signed mode.
# usage: tests/sdk/run.sh PATH/TO/cairn sqlite|postgres [pinned|latest]
#   pinned: inngest 3.38.0 (the seed apps' version, package.json here);
#   latest: the latest 3.x (latest/package.json), which needs Node >= 20 (skipped below).
# Exit 77 (skip) for Postgres without CAIRN_TEST_PG_URL outside CI, and for `latest` on an
# older Node; CI fails instead of skipping Postgres.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export CAIRN_BIN=$(realpath "${1:?usage: run.sh PATH/TO/cairn sqlite|postgres [pinned|latest]}")
backend=${2:?backend}
variant=${3:-pinned}
command -v npm >/dev/null || "$here/../../scripts/setup"

app_dir=$here
if [[ $variant == latest ]]; then
    major=$(node -p 'process.versions.node.split(".")[0]')
    if ((major < 20)); then
        echo "SKIP: the latest inngest 3.x needs Node >= 20; this machine has $(node --version)"
        exit 77
    fi
    app_dir=$here/latest
fi
# npm ci once per lock file (later runs find node_modules and return at once).
(
    cd "$app_dir"
    exec 9>"$app_dir/.install.lock"
    flock 9
    if ! cmp -s package-lock.json node_modules/.cairn-installed-lock 2>/dev/null; then
        npm ci --no-audit --no-fund --loglevel=error
        cp package-lock.json node_modules/.cairn-installed-lock
    fi
)

work=$(mktemp -d /tmp/cairn-sdk.XXXXXX)
pg_db=""
cleanup() {
    [[ -n $pg_db ]] && psql -q "$CAIRN_TEST_PG_URL" -c "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT
if [[ $backend == postgres ]]; then
    if [[ -z ${CAIRN_TEST_PG_URL:-} ]]; then
        [[ -n ${CI:-} ]] && { echo "FAIL: CAIRN_TEST_PG_URL must be set in CI"; exit 1; }
        echo "SKIP: CAIRN_TEST_PG_URL is not set (scripts/test sets it)"
        exit 77
    fi
    pg_db="cairn_sdk_$RANDOM$RANDOM"
    psql -q "$CAIRN_TEST_PG_URL" -c "CREATE DATABASE $pg_db" >/dev/null
    export CAIRN_TEST_DB="${CAIRN_TEST_PG_URL%/*}/$pg_db"
else
    export CAIRN_TEST_DB="sqlite://$work/cairn.db"
fi
export CAIRN_TEST_WORK=$work
# The app beside the chosen SDK's node_modules (imports resolve from the file's folder).
mkdir -p "$work/app"
cp "$here/app.mjs" "$work/app/app.mjs"
ln -s "$app_dir/node_modules" "$work/app/node_modules"
export SDK_APP_FILE=$work/app/app.mjs
cd "$here"
exec node --test --test-concurrency=1 sdk.test.mjs
