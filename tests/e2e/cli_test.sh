#!/usr/bin/env bash
# End-to-end checks of the `cairn` binary as a user runs it: exit codes, one-line errors,
# nothing half-created on bad input, /health over real HTTP, SIGTERM, and the same on a
# real Postgres when CAIRN_TEST_PG_URL is set (required in CI).
#
# usage: cli_test.sh PATH/TO/cairn
set -uo pipefail

cairn=$(realpath "${1:?usage: cli_test.sh PATH/TO/cairn}")
work=$(mktemp -d)
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT

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

# ---- operating runs from the command line -------------------------------------------------

# ops_checks LABEL DB: the runs/events/workflows/keys verbs on one database.
ops_checks() {
    local label=$1 db=$2
    local C=("$cairn")
    local sent run out rc
    sent=$("${C[@]}" events send example/hello --data '{"name":"cli"}' --examples --json --db "$db" 2>/dev/null)
    run=$(jq -r '.run_ids[0]' <<<"$sent")
    check "$label: events send starts a run" bash -c "[[ '$run' =~ ^[0-9a-f-]{36}$ ]]"
    "${C[@]}" events send example/hello --data '{' --examples --db "$db" >/dev/null 2>&1
    expect_eq "$label: events send with bad JSON exits 2" "$?" 2
    "${C[@]}" worker --examples --db "$db" >"$work/$label-worker.log" 2>&1 &
    local worker=$!
    pids+=("$worker")
    wait_for "$label run completes" 15 bash -c "'$cairn' runs show '$run' --json --db '$db' 2>/dev/null | jq -e '.status == \"completed\"'"
    kill -TERM "$worker"
    wait "$worker"
    expect_eq "$label: the worker stops with exit 0" "$?" 0

    out=$("${C[@]}" runs list --db "$db" 2>/dev/null)
    check "$label: runs list shows an aligned table" bash -c "grep -qE '^RUN +WORKFLOW +STATUS' <<<'$out' && grep -q '$run  hello' <<<'$out'"
    expect_eq "$label: runs list --json filters" "$("${C[@]}" runs list --workflow hello --status completed --json --db "$db" 2>/dev/null | jq -r '.runs[0].id')" "$run"
    out=$("${C[@]}" runs show "$run" --db "$db" 2>/dev/null)
    check "$label: runs show prints the timeline" bash -c "grep -q '^timeline' <<<'$out' && grep -qE '^ +5  summary' <<<'$out'"
    "${C[@]}" runs show no-such-run --db "$db" >/dev/null 2>&1
    expect_eq "$label: runs show of an unknown run exits 1" "$?" 1
    out=$("${C[@]}" runs replay "$run" --from-step reverse --json --examples --db "$db" 2>/dev/null)
    expect_eq "$label: runs replay --from-step starts a new run" "$(jq -r .replay_of <<<"$out")" "$run"
    local replay
    replay=$(jq -r .id <<<"$out")
    "${C[@]}" runs replay "$run" --from-step nope --db "$db" >/dev/null 2>&1
    expect_eq "$label: replay from an unknown step exits 1" "$?" 1
    "${C[@]}" runs cancel "$replay" --db "$db" >/dev/null 2>&1
    expect_eq "$label: runs cancel of a queued run exits 0" "$?" 0
    expect_eq "$label: it is cancelled" "$("${C[@]}" runs show "$replay" --json --db "$db" 2>/dev/null | jq -r .status)" cancelled
    "${C[@]}" runs cancel "$replay" --db "$db" >/dev/null 2>&1
    expect_eq "$label: cancelling it again exits 1" "$?" 1
    "${C[@]}" runs retry "$replay" --db "$db" >/dev/null 2>&1
    expect_eq "$label: runs retry of a cancelled run exits 0" "$?" 0
    "${C[@]}" runs retry "$run" --db "$db" >/dev/null 2>&1
    expect_eq "$label: runs retry of a completed run exits 1" "$?" 1
    "${C[@]}" runs retry --db "$db" >/dev/null 2>&1
    expect_eq "$label: runs retry with neither id nor filter exits 2" "$?" 2
    "${C[@]}" runs cancel "$replay" --db "$db" >/dev/null 2>&1
    "${C[@]}" runs retry --status cancelled --since 1h --db "$db" </dev/null >/dev/null 2>"$work/$label-bulk.err"
    expect_eq "$label: a bulk retry without --yes and no answer does nothing (exit 1)" "$?" 1
    check "$label: it asked with the count first" grep -q 'retry 1 run(s)?' "$work/$label-bulk.err"
    expect_eq "$label: bulk retry --yes re-queues the matching runs" \
        "$("${C[@]}" runs retry --status cancelled --since 1h --yes --json --db "$db" 2>/dev/null | jq -r '.retried | length')" 1
    "${C[@]}" runs retry --since soon --yes --db "$db" >/dev/null 2>&1
    expect_eq "$label: a malformed --since exits 2" "$?" 2
    out=$("${C[@]}" workflows list --examples --db "$db" 2>/dev/null)
    check "$label: workflows list shows hello with its trigger and counts" bash -c "grep -qE '^hello +1 +- +active +example/hello +- +cairn\S* +completed=' <<<'$out'"

    # Pause, bulk cancel, resume; replay with edited data.
    expect_eq "$label: workflows pause prints what it did" "$("${C[@]}" workflows pause hello --examples --db "$db" 2>/dev/null)" "paused hello"
    check "$label: workflows list shows it paused" bash -c "'$cairn' workflows list --examples --db '$db' 2>/dev/null | grep -qE '^hello +1 +- +paused '"
    "${C[@]}" workflows pause nope --examples --db "$db" >/dev/null 2>&1
    expect_eq "$label: pausing an unknown workflow exits 1" "$?" 1
    local queued
    queued=$("${C[@]}" events send example/hello --examples --json --db "$db" 2>/dev/null | jq -r '.run_ids[0]')
    "${C[@]}" worker --examples --db "$db" >"$work/$label-worker2.log" 2>&1 &
    worker=$!
    pids+=("$worker")
    sleep 1.5
    expect_eq "$label: a paused workflow's run stays queued with a worker running" "$("${C[@]}" runs show "$queued" --json --db "$db" 2>/dev/null | jq -r .status)" queued
    "${C[@]}" runs cancel --workflow hello --db "$db" </dev/null >/dev/null 2>"$work/$label-cancel.err"
    expect_eq "$label: a bulk cancel without --yes and no answer does nothing (exit 1)" "$?" 1
    check "$label: it asked with the count of matching runs" grep -qE 'cancel [0-9]+ run\(s\)\?' "$work/$label-cancel.err"
    expect_eq "$label: runs cancel --status queued --since 1h --yes cancels the queued run" \
        "$("${C[@]}" runs cancel --workflow hello --status queued --since 1h --yes --json --db "$db" 2>/dev/null | jq -c --arg q "$queued" '[.matched == (.cancelled | length), (.cancelled | index($q)) != null]')" "[true,true]"
    expect_eq "$label: workflows resume prints what it did" "$("${C[@]}" workflows resume hello --examples --db "$db" 2>/dev/null)" "resumed hello"
    out=$("${C[@]}" runs replay "$run" --data '{"name":"edited"}' --json --examples --db "$db" 2>/dev/null)
    local edited
    edited=$(jq -r .id <<<"$out")
    wait_for "$label edited replay completes" 15 bash -c "'$cairn' runs show '$edited' --json --db '$db' 2>/dev/null | jq -e '.output.greeting == \"hello, edited\"'"
    check "$label: runs replay --data ran the new data" bash -c "'$cairn' runs show '$edited' --json --db '$db' 2>/dev/null | jq -e '.output.greeting == \"hello, edited\" and .replay_of == \"$run\"' >/dev/null"
    "${C[@]}" runs replay "$run" --data '{' --db "$db" >/dev/null 2>&1
    expect_eq "$label: runs replay with bad --data exits 2" "$?" 2
    "${C[@]}" runs replay --data '{}' --workflow hello --db "$db" >/dev/null 2>&1
    expect_eq "$label: --data without a run id exits 2" "$?" 2
    kill -TERM "$worker"
    wait "$worker"
    expect_eq "$label: events list --json shows the runs of each event" \
        "$("${C[@]}" events list --name example/hello --json --db "$db" 2>/dev/null | jq -r '.events[-1].run_ids[0]')" "$run"
    local key_id
    key_id=$("${C[@]}" keys create --name ci --scope events --json --db "$db" 2>/dev/null | jq -r .id)
    check "$label: keys list shows the key without its secret" bash -c "'$cairn' keys list --json --db '$db' 2>/dev/null | jq -e '.[] | select(.id == \"$key_id\") | .scope == \"events\" and (has(\"key\") | not)' >/dev/null"
    "${C[@]}" keys revoke "$key_id" --db "$db" >/dev/null 2>&1
    expect_eq "$label: keys revoke exits 0" "$?" 0
    "${C[@]}" keys revoke "$key_id" --db "$db" >/dev/null 2>&1
    expect_eq "$label: revoking twice exits 1" "$?" 1
    "${C[@]}" keys create --name x --scope root --db "$db" >/dev/null 2>&1
    expect_eq "$label: a bad scope exits 2" "$?" 2

    # Retention on demand: nothing is old enough at 30 days; at 0s every ended run is.
    expect_eq "$label: gc --dry-run at the default age matches nothing" \
        "$("${C[@]}" gc --dry-run --json --db "$db" 2>/dev/null | jq -r .matched)" 0
    local ended
    ended=$("${C[@]}" runs list --json --limit 1000 --db "$db" 2>/dev/null | jq '[.runs[] | select(.status == "completed" or .status == "failed" or .status == "cancelled")] | length')
    expect_eq "$label: gc --dry-run --older-than 0s counts every ended run" \
        "$("${C[@]}" gc --older-than 0s --dry-run --json --db "$db" 2>/dev/null | jq -r .matched)" "$ended"
    expect_eq "$label: a dry run deletes nothing" \
        "$("${C[@]}" gc --older-than 0s --dry-run --json --db "$db" 2>/dev/null | jq -r .matched)" "$ended"
    "${C[@]}" gc --older-than soon --db "$db" >/dev/null 2>&1
    expect_eq "$label: a malformed --older-than exits 2" "$?" 2
    "${C[@]}" gc --status running --db "$db" >/dev/null 2>&1
    expect_eq "$label: gc of a status that has not ended exits 2" "$?" 2
    expect_eq "$label: gc --older-than 0s deletes the ended runs" \
        "$("${C[@]}" gc --older-than 0s --json --db "$db" 2>/dev/null | jq -r .deleted_runs)" "$ended"
    expect_eq "$label: and runs list no longer shows them" \
        "$("${C[@]}" runs list --json --limit 1000 --db "$db" 2>/dev/null | jq '[.runs[] | select(.status == "completed" or .status == "failed" or .status == "cancelled")] | length')" 0
    "${C[@]}" runs show "$run" --db "$db" >/dev/null 2>&1
    expect_eq "$label: a deleted run is not found (exit 1)" "$?" 1
}

ops_checks sqlite "sqlite://$work/ops.db"

# ---- cron: three worker processes start one run per tick ---------------------------------

# Each process's clock reads 8 s before a minute (CAIRN_CLOCK_SKEW_MS; SQLite keeps the
# local clock), so the every-minute schedule ticks while all three run.
cron_db="sqlite://$work/cron.db"
CAIRN_EXAMPLE_CRON='0 0 31 2 *' "$cairn" workflows list --examples --db "$cron_db" >/dev/null 2>"$work/cron-bad.err"
expect_eq "a malformed cron expression exits 2" "$?" 2
check "and names the expression" grep -q "cron expression '0 0 31 2 \*': it never matches" "$work/cron-bad.err"
now_ms=$(date +%s%3N)
skew=$(( (52000 - now_ms % 60000 + 120000) % 60000 ))
cron_workers=()
for i in 1 2 3; do
    CAIRN_EXAMPLE_CRON='* * * * *' CAIRN_CLOCK_SKEW_MS=$skew "$cairn" worker --examples --db "$cron_db" >"$work/cron-$i.log" 2>&1 &
    cron_workers+=($!)
    pids+=($!)
done
tick_runs() { "$cairn" runs list --workflow tick --json --db "$cron_db" 2>/dev/null; }
wait_for "the tick's run completes" 30 bash -c "'$cairn' runs list --workflow tick --status completed --json --db '$cron_db' 2>/dev/null | jq -e '.runs | length >= 1' >/dev/null"
sleep 2
expect_eq "three workers started one run for the tick" "$(tick_runs | jq '.runs | length')" 1
check "the run ran for a minute's tick" bash -c "'$cairn' runs show \$('$cairn' runs list --workflow tick --json --db '$cron_db' 2>/dev/null | jq -r '.runs[0].id') --json --db '$cron_db' 2>/dev/null | jq -e '.output | test(\":00.000Z$\")' >/dev/null"
check "workflows list shows the schedule's next tick" bash -c "CAIRN_EXAMPLE_CRON='* * * * *' '$cairn' workflows list --examples --db '$cron_db' 2>/dev/null | grep -qE '^tick +1 +- +active +cron\(\* \* \* \* \*\) +[0-9T:-]+Z '"
kill -TERM "${cron_workers[@]}"
wait "${cron_workers[@]}"
expect_eq "the cron workers stop with exit 0" "$?" 0

# ---- Postgres ----------------------------------------------------------------------------

if [[ -z ${CAIRN_TEST_PG_URL:-} ]]; then
    if [[ -n ${CI:-} ]]; then
        bad "CAIRN_TEST_PG_URL is set in CI" "scripts/test starts a throwaway cluster and sets it"
    else
        echo "skip - Postgres checks: CAIRN_TEST_PG_URL is not set (scripts/test sets it)"
    fi
else
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
    check "each engine migration is recorded once" \
        test "$(psql -tA "$pg" -c "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations WHERE component = 'engine'")" = 1,2,3,4,5,6,7,8,9,10,11,12,13

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

    ops_checks postgres "$(new_pg_db)"

    expect_usage_error pg-unreachable "cannot connect" migrate --db "postgres://u:hunter2@127.0.0.1:1/db"
    check "the password is not printed" bash -c "! grep -q hunter2 '$work/pg-unreachable.err'"
fi

finish
