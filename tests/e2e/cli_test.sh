#!/usr/bin/env bash
# End-to-end checks of the `cairn` binary as a user runs it: exit codes, one-line errors,
# nothing half-created on bad input, /health over real HTTP, SIGTERM, and the same on a
# real Postgres when CAIRN_TEST_PG_URL is set (required in CI).
#
# usage: cli_test.sh PATH/TO/cairn
set -uo pipefail

cairn=$(realpath "${1:?usage: cli_test.sh PATH/TO/cairn}")
work=$(mktemp -d /tmp/cairn-cli-test.XXXXXX)
pids=()
pg_dbs=()
passed=0
failed=0

cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null; done
    for db in "${pg_dbs[@]}"; do
        psql -q "$CAIRN_TEST_PG_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
    done
    rm -rf "$work"
}
trap cleanup EXIT

ok() { passed=$((passed + 1)); echo "ok   - $1"; }
bad() { failed=$((failed + 1)); echo "FAIL - $1"; [[ -n ${2:-} ]] && echo "       $2"; }
check() {  # check DESCRIPTION COMMAND...
    local desc=$1
    shift
    if "$@"; then ok "$desc"; else bad "$desc"; fi
}

# run_cli NAME ARGS...: runs cairn in $work/NAME (created empty), records exit code and stderr.
run_cli() {
    local name=$1
    shift
    mkdir -p "$work/$name"
    (cd "$work/$name" && "$cairn" "$@" >"$work/$name.out" 2>"$work/$name.err")
    echo $? >"$work/$name.rc"
}
rc_of() { cat "$work/$1.rc"; }
err_lines() { wc -l <"$work/$1.err"; }
files_in() { find "$work/$1" -mindepth 1 | wc -l; }

# expect_usage_error NAME PATTERN ARGS...: exit 2, exactly one stderr line matching, no files.
expect_usage_error() {
    local name=$1 pattern=$2
    shift 2
    run_cli "$name" "$@"
    if [[ $(rc_of "$name") == 2 && $(err_lines "$name") == 1 ]] && grep -q -- "$pattern" "$work/$name.err" &&
        [[ $(files_in "$name") == 0 ]]; then
        ok "$name: exit 2, one line, nothing created"
    else
        bad "$name: exit 2, one line, nothing created" \
            "rc=$(rc_of "$name") lines=$(err_lines "$name") files=$(files_in "$name") err=$(head -c 300 "$work/$name.err")"
    fi
}

# start_server NAME ARGS...: starts `cairn serve --listen 127.0.0.1:0 ARGS` in $work/NAME and
# sets $base to its URL once it reports where it listens.
start_server() {
    local name=$1
    shift
    mkdir -p "$work/$name"
    (cd "$work/$name" && exec "$cairn" serve --listen 127.0.0.1:0 "$@" >"$work/$name.out" 2>"$work/$name.err") &
    server_pid=$!
    pids+=("$server_pid")
    base=""
    for _ in $(seq 1 100); do
        base=$(grep -o 'serving http://[0-9.:]*' "$work/$name.err" 2>/dev/null | head -1 | sed 's/serving //')
        [[ -n $base ]] && return 0
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "server $name did not start: $(cat "$work/$name.err")"
    return 1
}

stop_server() {  # SIGTERM; returns the server's exit code (it must exit within 10 s)
    kill -TERM "$server_pid"
    for _ in $(seq 1 100); do
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    wait "$server_pid" 2>/dev/null
}

# ---- usage -----------------------------------------------------------------------------

run_cli help --help
check "--help exits 0 and lists the verbs" bash -c "[[ $(rc_of help) == 0 ]] && grep -q serve '$work/help.out' && grep -q migrate '$work/help.out'"
run_cli version --version
check "--version prints the version" grep -qE '^[0-9]+\.[0-9]+\.[0-9]+' "$work/version.out"
run_cli noverb
check "no verb is a usage error (2)" test "$(rc_of noverb)" = 2
run_cli badflag serve --no-such-flag
check "an unknown flag is a usage error (2)" test "$(rc_of badflag)" = 2
run_cli badthreads serve --threads 0
check "--threads 0 is a usage error (2)" test "$(rc_of badthreads)" = 2

# ---- bad input: one line on stderr, exit 2, nothing half-created -------------------------

expect_usage_error bad-url "unsupported database URL" serve --db mysql://localhost/x --listen 127.0.0.1:0
expect_usage_error bad-url-env "unsupported database URL" serve --listen 127.0.0.1:0 --db "$(printf 'sqlite:')"
CAIRN_DB=redis://x expect_usage_error bad-url-from-env "redis://x" migrate
expect_usage_error bad-option "unknown SQLite URL option" migrate --db "sqlite://x.db?journal=off"
expect_usage_error missing-dir "cannot open" serve --db "sqlite://$work/no/such/dir/x.db" --listen 127.0.0.1:0
check "the missing directory was not created" test ! -e "$work/no"
expect_usage_error bad-listen "listen address" serve --listen nonsense
expect_usage_error bad-port "port" serve --listen 127.0.0.1:99999
expect_usage_error status-missing "no database at" migrate --status --db sqlite://absent.db

# A port in use: the second server fails before creating its database.
start_server first || bad "first server starts"
port=${base##*:}
expect_usage_error port-in-use "cannot listen" serve --listen "127.0.0.1:$port" --db sqlite://second.db

# ---- serve on SQLite with nothing configured ------------------------------------------

check "serve with no configuration created cairn.db in the working directory" test -f "$work/first/cairn.db"
health=$(curl -s -w '\n%{http_code}' "$base/health")
check "GET /health is 200" test "$(tail -1 <<<"$health")" = 200
body=$(head -1 <<<"$health")
check "/health says status ok, backend sqlite and the version" \
    test "$(jq -r '[.status, .backend, (.version | test("^[0-9]+\\.[0-9]+\\.[0-9]+$"))] | join(",")' <<<"$body")" = "ok,sqlite,true"
check "an unknown route is 404 in the JSON error shape" \
    test "$(curl -s "$base/nope" | jq -r '.error.code')" = not_found
check "POST /health is 405" test "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$base/health")" = 405
head -c 2000000 /dev/zero | tr '\0' 'a' >"$work/big.txt"
check "a 2 MB body is refused with 413" \
    test "$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary @"$work/big.txt" "$base/health")" = 413
check "responses carry X-Request-Id" bash -c "curl -s -D - -o /dev/null '$base/health' | grep -qi '^x-request-id: '"
check "the server still answers after the bad requests" test "$(curl -s -o /dev/null -w '%{http_code}' "$base/health")" = 200
stop_server
check "SIGTERM stops the server with exit 0" test $? = 0

# CAIRN_DB and CAIRN_LISTEN configure serve like the flags.
mkdir -p "$work/env"
(cd "$work/env" && CAIRN_DB="sqlite://$work/env/from-env.db" CAIRN_LISTEN=127.0.0.1:0 exec "$cairn" serve \
    >"$work/env.out" 2>"$work/env.err") &
server_pid=$!
pids+=("$server_pid")
for _ in $(seq 1 100); do grep -q serving "$work/env.err" && break; sleep 0.1; done
check "CAIRN_DB and CAIRN_LISTEN are honoured" test -f "$work/env/from-env.db"
stop_server
check "the server configured from the environment stops with exit 0" test $? = 0

# ---- migrate -----------------------------------------------------------------------------

run_cli migrate migrate --db sqlite://m.db
check "migrate exits 0 and lists the engine migration as applied" \
    bash -c "[[ $(rc_of migrate) == 0 ]] && grep -qE '^engine +1 +applied' '$work/migrate.out'"
run_cli migrate2 migrate --db "sqlite://$work/migrate/m.db" --status --json
check "migrate --status --json reports every migration applied" \
    test "$(jq -r '[.[] | .status] | unique | join(",")' "$work/migrate2.out")" = applied

# ---- Postgres ----------------------------------------------------------------------------

if [[ -z ${CAIRN_TEST_PG_URL:-} ]]; then
    if [[ -n ${CI:-} ]]; then
        bad "CAIRN_TEST_PG_URL is set in CI" "scripts/test starts a throwaway cluster and sets it"
    else
        echo "skip - Postgres checks: CAIRN_TEST_PG_URL is not set (scripts/test sets it)"
    fi
else
    new_pg_db() {  # prints the URL of a new, empty database
        local name="cairn_cli_$RANDOM$RANDOM"
        psql -q "$CAIRN_TEST_PG_URL" -c "CREATE DATABASE $name" >/dev/null
        pg_dbs+=("$name")
        echo "${CAIRN_TEST_PG_URL%/*}/$name"
    }

    pg=$(new_pg_db)
    # Two processes migrating one database at once: both succeed, the migration is applied once.
    (cd "$work" && "$cairn" migrate --db "$pg" >/dev/null 2>"$work/pgm1.err") &
    m1=$!
    (cd "$work" && "$cairn" migrate --db "$pg" >/dev/null 2>"$work/pgm2.err") &
    m2=$!
    wait $m1
    rc1=$?
    wait $m2
    rc2=$?
    check "two concurrent migrate processes on Postgres both exit 0" test "$rc1$rc2" = 00
    check "the engine migration is recorded once" \
        test "$(psql -tA "$pg" -c 'SELECT count(*) FROM schema_migrations')" = 1

    start_server pg --db "$pg" || bad "server on Postgres starts"
    check "/health on Postgres says backend postgres" \
        test "$(curl -s "$base/health" | jq -r '.status + "," + .backend')" = "ok,postgres"
    # Take the database away under the running server: /health must say so with 503.
    psql -q "$CAIRN_TEST_PG_URL" -c "DROP DATABASE ${pg##*/} WITH (FORCE)" >/dev/null
    check "/health is 503 when the database is gone" \
        test "$(curl -s -o "$work/h503.json" -w '%{http_code}' "$base/health")" = 503
    check "the 503 body says unavailable" test "$(jq -r .status "$work/h503.json")" = unavailable
    curl -s "$base/health" >/dev/null
    check "after losing its database the server still stops with exit 0" stop_server

    expect_usage_error pg-unreachable "cannot connect" migrate --db "postgres://u:hunter2@127.0.0.1:1/db"
    check "the password is not printed" bash -c "! grep -q hunter2 '$work/pg-unreachable.err'"
fi

echo
echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
