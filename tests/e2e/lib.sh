# Shared helpers for the end-to-end scripts: pass/fail counting and a server under test.
# Source it; set $cairn and $work first.

passed=0
failed=0
pids=()
pg_dbs=()

ok() { passed=$((passed + 1)); echo "ok   - $1"; }
bad() { failed=$((failed + 1)); echo "FAIL - $1"; [[ -n ${2:-} ]] && echo "       $2"; }
check() {  # check DESCRIPTION COMMAND...
    local desc=$1
    shift
    if "$@"; then ok "$desc"; else bad "$desc"; fi
}
expect_eq() {  # expect_eq DESCRIPTION ACTUAL EXPECTED
    if [[ $2 == "$3" ]]; then ok "$1"; else bad "$1" "got '$2', want '$3'"; fi
}

cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null; done
    for db in "${pg_dbs[@]}"; do
        psql -q "$CAIRN_TEST_PG_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
    done
    rm -rf "$work"
}

new_pg_db() {  # prints the URL of a new, empty Postgres database
    local name="cairn_e2e_$RANDOM$RANDOM"
    psql -q "$CAIRN_TEST_PG_URL" -c "CREATE DATABASE $name" >/dev/null
    pg_dbs+=("$name")
    echo "${CAIRN_TEST_PG_URL%/*}/$name"
}

# pick_db sqlite|postgres NAME: sets $db to a fresh database on that backend. Without
# CAIRN_TEST_PG_URL, Postgres fails the script in CI and skips it (exit 77) elsewhere.
pick_db() {
    if [[ $1 == postgres ]]; then
        if [[ -z ${CAIRN_TEST_PG_URL:-} ]]; then
            [[ -n ${CI:-} ]] && { echo "FAIL: CAIRN_TEST_PG_URL must be set in CI"; exit 1; }
            echo "SKIP: CAIRN_TEST_PG_URL is not set (scripts/test sets it)"
            exit 77
        fi
        db=$(new_pg_db)
    else
        db="sqlite://$work/$2.db"
    fi
}

# start_server NAME ARGS...: `cairn serve --listen 127.0.0.1:0 ARGS` in $work/NAME; sets
# $base (its URL) and $server_pid once it reports where it listens.
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

# wait_for DESCRIPTION SECONDS COMMAND...: retries COMMAND every 0.1 s until it succeeds.
wait_for() {
    local desc=$1 limit=$2
    shift 2
    local tries=$((limit * 10))
    for _ in $(seq 1 "$tries"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "timed out after ${limit}s waiting for: $desc"
    return 1
}

finish() {
    echo
    echo "$passed passed, $failed failed"
    [[ $failed == 0 ]]
}
