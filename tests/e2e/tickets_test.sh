#!/usr/bin/env bash
# The ticket plugin end to end, as its users drive it: curl against a real `cairn serve`,
# staff made with `cairn users create`, the ticket-created run watched to completion, mail
# read back (the database outbox on SQLite; a real SMTP server, maildev, on Postgres), the
# WebSocket feed through a real client, and every permission and validation boundary.
#
# usage: tickets_test.sh PATH/TO/cairn sqlite|postgres
set -uo pipefail

cairn=$(realpath "${1:?usage: tickets_test.sh PATH/TO/cairn sqlite|postgres}")
backend=${2:-sqlite}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
source "$here/lib.sh"
trap cleanup EXIT

node_tools="$here/../ui"
"$node_tools/install.sh" || { echo "FAIL: installing the Node test tools"; exit 1; }

pick_db "$backend" tickets

# ---- mail: outbox on SQLite, a real SMTP server (maildev, with auth) on Postgres --------
# A port nobody listens on, below the kernel's ephemeral range (32768 and up), where
# outgoing connections (to Postgres, curl's) take their source ports.
free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 12768))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
    return 1
}
# Starts maildev on two free ports; fails when it exits (a port was taken between the
# check and its listen) or does not answer within 20 s.
start_maildev() {
    smtp_port=$(free_port) && web_port=$(free_port) && [[ $smtp_port != "$web_port" ]] || return 1
    "$node_tools/node_modules/.bin/maildev" --ip 127.0.0.1 --smtp "$smtp_port" --web "$web_port" \
        --incoming-user cairn --incoming-pass s3cret --mail-directory "$work/maildev" \
        >"$work/maildev.log" 2>&1 &
    maildev_pid=$!
    pids+=("$maildev_pid")
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$web_port/email" >/dev/null && return 0
        kill -0 "$maildev_pid" 2>/dev/null || return 1
        sleep 0.2
    done
    return 1
}
if [[ $backend == postgres ]]; then
    started=0 maildev_pid=""
    for _ in 1 2 3 4 5; do
        if start_maildev; then started=1; break; fi
        [[ -n $maildev_pid ]] && kill "$maildev_pid" 2>/dev/null
    done
    ((started)) || { echo "FAIL: maildev did not start"; cat "$work/maildev.log"; exit 1; }
    # maildev offers no STARTTLS: plain SMTP must be asked for.
    export CAIRN_MAIL="smtp://cairn:s3cret@127.0.0.1:$smtp_port?tls=none"
    # Subjects of the mails delivered to $1.
    subjects_to() { curl -s "http://127.0.0.1:$web_port/email" | jq -r --arg to "$1" '.[] | select(any(.to[]; .address == $to)) | .subject'; }
else
    unset CAIRN_MAIL
    subjects_to() { "$cairn" mail list --db "$db" --to "$1" --json 2>/dev/null | jq -r '.[].subject'; }
fi
has_mail() { subjects_to "$1" | grep -qF -- "$2"; }

# ---- staff from the CLI, before the server runs ------------------------------------------
mk() { "$cairn" users create --db "$db" --json "$@" 2>"$work/mk.err"; }
admin_id=$(mk --email admin@example.test --role admin --password admin-pass-1 | jq -r .id)
react_mod=$(mk --email rita@example.test --name Rita --role moderator --skills "ReactJS,css,frontend" --password mod-pass-11 | jq -r .id)
pg_mod=$(mk --email paul@example.test --name Paul --role moderator --skills "postgres,database,backend" --password mod-pass-22 | jq -r .id)
check "users create makes an admin and two moderators" bash -c "[[ -n '$admin_id' && -n '$react_mod' && -n '$pg_mod' && '$admin_id' != null ]]"
generated=$(mk --email gen@example.test | jq -r .password)
check "users create generates a password when none is given" test "${#generated}" -ge 16
"$cairn" users create --db "$db" --email admin@example.test --password whatever-1 >/dev/null 2>"$work/dup.err"
expect_eq "users create: a taken email exits 1" "$?" 1
"$cairn" users create --db "$db" --email not-an-email >/dev/null 2>&1
expect_eq "users create: a bad email exits 2" "$?" 2
key=$("$cairn" keys create --name tickets-test --db "$db" 2>/dev/null)

CAIRN_AUTH_RATE_ACCOUNT=5 start_server tickets --db "$db" || { bad "server starts"; finish; exit 1; }
V1="$base/api/v1"

# req METHOD PATH TOKEN [BODY]: sets $code and writes the body to $work/body.json.
req() {
    local args=(-s -o "$work/body.json" -w '%{http_code}' -X "$1" "$V1$2")
    [[ -n $3 ]] && args+=(-H "Authorization: Bearer $3")
    [[ $# -ge 4 ]] && args+=(-H 'Content-Type: application/json' --data-binary "$4")
    code=$(curl "${args[@]}")
}
jqc() { jq -e "$@" >/dev/null; }
jb() { jq -r "$@" "$work/body.json"; }
login() {  # login EMAIL PASSWORD -> access token
    req POST /auth/login "" "{\"email\":\"$1\",\"password\":\"$2\"}"
    jb .access_token
}

# ---- registration and login ----------------------------------------------------------------
req POST /auth/register "" '{"email":"Ann@Example.test","password":"ann-pass-1","name":"Ann"}'
expect_eq "register: 201" "$code" 201
check "register returns tokens and the user (email lower-cased, role user)" \
    jqc '.access_token and .refresh_token and .token_type == "Bearer" and .user.email == "ann@example.test" and .user.role == "user" and (.user | has("password_hash") | not)' "$work/body.json"
ann=$(jb .access_token)
ann_id=$(jb .user.id)
ann_refresh=$(jb .refresh_token)
req POST /auth/register "" '{"email":"bob@example.test","password":"bob-pass-1","name":"Bob","role":"admin"}'
expect_eq "register: a second user" "$code" 201
check "register ignores a requested role" jqc '.user.role == "user"' "$work/body.json"
bob=$(jb .access_token)
bob_id=$(jb .user.id)
req POST /auth/register "" '{"email":"ann@example.test","password":"another-1"}'
expect_eq "register: a taken email is 409" "$code" 409
req POST /auth/register "" '{"email":"x@example.test","password":"short"}'
expect_eq "register: a short password is 400" "$code" 400
check "register: the error names the field" jqc '.error.code == "validation_failed" and any(.error.details[]; .field == "password")' "$work/body.json"
req POST /auth/register "" '{"email":"nope","password":"long-enough"}'
expect_eq "register: a bad email is 400" "$code" 400
wait_for "welcome mail to ann" 20 has_mail ann@example.test "Welcome"
check "user-signup mailed a welcome to the new user" has_mail ann@example.test "Welcome"

req GET /users/me "$ann"
check "GET /users/me is the caller" jqc --arg id "$ann_id" '.id == $id and .name == "Ann"' "$work/body.json"
req PATCH /users/me "$ann" '{"name":"Ann A.","skills":["Docker"]}'
check "PATCH /users/me changes name and skills" jqc '.name == "Ann A." and .skills == ["docker"]' "$work/body.json"
req GET /users/me ""
expect_eq "no token: 401" "$code" 401
req GET /users/me "not.a.token"
expect_eq "garbage token: 401" "$code" 401
forged="eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.$(printf '{"sub":"%s","sid":"x","typ":"access","exp":9999999999}' "$ann_id" | base64 -w0 | tr '+/' '-_' | tr -d '=')."
req GET /users/me "$forged"
expect_eq "an alg=none token is refused" "$code" 401

admin=$(login admin@example.test admin-pass-1)
rita=$(login rita@example.test mod-pass-11)
paul=$(login paul@example.test mod-pass-22)
check "staff can log in" bash -c "[[ '$admin' == ey* && '$rita' == ey* && '$paul' == ey* ]]"
req POST /auth/login "" '{"email":"ann@example.test","password":"wrong-password"}'
expect_eq "login: wrong password is 401" "$code" 401

# ---- ticket-created: analysis, assignment, email ---------------------------------------------
count_tickets() { req GET /tickets/summary "$admin"; jb .total; }
req POST /tickets "$ann" '{"title":"Checkout fails: Postgres deadlock on orders table","description":"Since the deploy, checkout intermittently fails with a deadlock detected error from postgres. The database log shows two transactions locking orders and payments.","tags":["bug","database"]}'
expect_eq "create ticket: 201" "$code" 201
t1=$(jb .id)
run1=$(jb .run_id)
check "the new ticket is open, unanalysed, and names its run" jqc '.status == "open" and .priority == null and (.run_id | length) == 36 and .created_by != null' "$work/body.json"
run_done() { curl -s -H "Authorization: Bearer $key" "$base/api/engine/runs/$run1" | jqc '.status == "completed"' >/dev/null; }
wait_for "ticket-created run completes" 30 run_done
check "the ticket-created run completed" run_done
curl -s -H "Authorization: Bearer $key" "$base/api/engine/runs/$run1" >"$work/run.json"
check "the run recorded every step" jqc '[.steps[].key] == ["load-ticket","mark-in-progress","analyse","save-analysis","pick-assignee","assign","email-assignee"]' "$work/run.json"
req GET "/tickets/$t1" "$ann"
check "the ticket was analysed and moved to in_progress" jqc '.status == "in_progress" and (.priority | IN("low","medium","high")) and (.helpful_notes | length) > 20 and (.summary | length) > 5 and (.related_skills | index("postgresql"))' "$work/body.json"
check "the ticket went to the database moderator" jqc --arg id "$pg_mod" '.assigned_to == $id' "$work/body.json"
wait_for "assignment mail to paul" 20 has_mail paul@example.test "Checkout fails"
check "the assignee was emailed" has_mail paul@example.test "Checkout fails"

req POST /tickets "$bob" '{"title":"React page layout broken","description":"The settings page renders a blank component in the browser after the last frontend release; css looks wrong too.","tags":["frontend"],"deadline":"2099-01-01T00:00:00Z"}'
t2=$(jb .id)
t2_done() { req GET "/tickets/$t2" "$bob"; jqc '.assigned_to != null' "$work/body.json" >/dev/null; }
wait_for "second ticket assigned" 30 t2_done
req GET "/tickets/$t2" "$bob"
check "a frontend ticket goes to the react moderator" jqc --arg id "$react_mod" '.assigned_to == $id and .deadline == "2099-01-01T00:00:00.000Z"' "$work/body.json"

# ---- permission boundaries -------------------------------------------------------------------
req GET "/tickets/$t1" "$bob"
expect_eq "another user's ticket is 404, not 403" "$code" 404
req PATCH "/tickets/$t1" "$bob" '{"title":"mine now"}'
expect_eq "editing another user's ticket is 404" "$code" 404
req PATCH "/tickets/$t1" "$ann" '{"status":"closed"}'
expect_eq "a user changing status is 403" "$code" 403
req PATCH "/tickets/$t1/status" "$ann" '{"status":"closed"}'
expect_eq "a user on the status route is 403" "$code" 403
req PATCH "/tickets/$t1" "$ann" '{"title":"edited"}'
expect_eq "the owner cannot edit a ticket no longer open (409)" "$code" 409
req GET /tickets "$ann"
check "a user lists only their own tickets" jqc --arg id "$t1" '.total == 1 and .tickets[0].id == $id' "$work/body.json"
req GET /tickets "$rita"
check "a moderator lists all tickets" jqc '.total == 2' "$work/body.json"
req GET "/tickets?assigned_to_me=true" "$rita"
check "assigned_to_me filters" jqc --arg id "$t2" '.total == 1 and .tickets[0].id == $id' "$work/body.json"
req GET "/tickets?status=bogus" "$rita"
expect_eq "a bad filter is 400" "$code" 400
req GET "/tickets?q=DEADLOCK&sort=-priority" "$admin"
check "free-text search finds the ticket" jqc --arg id "$t1" '.total == 1 and .tickets[0].id == $id' "$work/body.json"
req GET "/tickets?tag=frontend" "$admin"
check "tag filter" jqc --arg id "$t2" '.total == 1 and .tickets[0].id == $id' "$work/body.json"
req PATCH "/tickets/$t1" "$paul" '{"status":"resolved","priority":"low"}'
check "staff change status and priority" jqc '.status == "resolved" and .priority == "low"' "$work/body.json"
req POST "/tickets/$t1/assign" "$admin" "{\"user_id\":\"$ann_id\"}"
expect_eq "assigning to a plain user is 400" "$code" 400
req POST "/tickets/$t1/assign" "$ann" "{\"user_id\":\"$react_mod\"}"
expect_eq "a user cannot assign (403)" "$code" 403
req POST "/tickets/$t1/assign" "$admin" "{\"user_id\":\"$react_mod\"}"
check "an admin reassigns" jqc --arg id "$react_mod" '.assigned_to == $id' "$work/body.json"
req DELETE "/tickets/$t1/assign" "$rita"
check "a moderator unassigns" jqc '.assigned_to == null' "$work/body.json"
req DELETE "/tickets/$t1" "$ann"
expect_eq "the owner cannot delete (403)" "$code" 403
req DELETE "/tickets/$t1" "$rita"
expect_eq "a moderator cannot delete (403)" "$code" 403
req GET /users "$rita"
expect_eq "a moderator cannot list users (403)" "$code" 403

# ---- replies ----------------------------------------------------------------------------------
req POST "/tickets/$t1/replies" "$bob" '{"body":"me too"}'
expect_eq "a stranger cannot reply (404)" "$code" 404
req POST "/tickets/$t1/replies" "$paul" '{"body":"Fixed by reordering the locks; please confirm."}'
expect_eq "staff reply: 201" "$code" 201
req POST "/tickets/$t1/replies" "$ann" '{"body":"Confirmed, thanks!"}'
expect_eq "owner reply: 201" "$code" 201
req GET "/tickets/$t1" "$ann"
check "the ticket shows both replies in order" jqc '[.replies[].author_name] == ["Paul","Ann A."]' "$work/body.json"
wait_for "reply mail to ann" 20 has_mail ann@example.test "New reply"
check "a staff reply emails the owner" has_mail ann@example.test "New reply on your ticket"

# ---- validation: 4xx and nothing written -------------------------------------------------------
before=$(count_tickets)
big=$(head -c 102400 /dev/zero | tr '\0' 'a')
invalid() {  # invalid DESCRIPTION BODY
    req POST /tickets "$ann" "$2"
    if [[ $code == 400 ]] && jqc '.error.code | IN("validation_failed","invalid_json")' "$work/body.json" >/dev/null; then
        ok "rejected with 400: $1"
    else
        bad "rejected with 400: $1" "got $code $(head -c 300 "$work/body.json")"
    fi
}
invalid "missing title" '{"description":"d","tags":["a"]}'
invalid "empty title" '{"title":"   ","description":"d","tags":["a"]}'
invalid "zero tags" '{"title":"t","description":"d","tags":[]}'
invalid "five tags" '{"title":"t","description":"d","tags":["a","b","c","d","e"]}'
invalid "a 100 KB description" "{\"title\":\"t\",\"description\":\"$big\",\"tags\":[\"a\"]}"
invalid "a deadline that is not a time" '{"title":"t","description":"d","tags":["a"],"deadline":"next tuesday"}'
invalid "a deadline in the past" '{"title":"t","description":"d","tags":["a"],"deadline":"2001-01-01T00:00:00Z"}'
invalid "an impossible date" '{"title":"t","description":"d","tags":["a"],"deadline":"2099-02-30T00:00:00Z"}'
invalid "a number for a title" '{"title":5,"description":"d","tags":["a"]}'
invalid "tags as a string" '{"title":"t","description":"d","tags":"a"}'
invalid "a tag with spaces inside quotes" '{"title":"t","description":"d","tags":["a\"b"]}'
invalid "not JSON" '{"title":'
invalid "a JSON array" '[1,2]'
expect_eq "no invalid ticket was written" "$(count_tickets)" "$before"

# ---- refresh rotation and reuse detection -------------------------------------------------------
req POST /auth/refresh "" "{\"refresh_token\":\"$ann_refresh\"}"
expect_eq "refresh: 200" "$code" 200
ann2=$(jb .access_token)
ann_refresh2=$(jb .refresh_token)
check "refresh rotates the refresh token" bash -c "[[ '$ann_refresh2' != '$ann_refresh' && '$ann_refresh2' == rt_* ]]"
req POST /auth/refresh "" "{\"refresh_token\":\"$ann_refresh\"}"
expect_eq "a spent refresh token is refused" "$code" 401
req POST /auth/refresh "" "{\"refresh_token\":\"$ann_refresh2\"}"
expect_eq "reuse revoked the whole family: its newest token is refused too" "$code" 401
req GET /users/me "$ann2"
expect_eq "…and its access tokens stop working" "$code" 401
ann=$(login ann@example.test ann-pass-1)
req POST /auth/logout "$ann"
expect_eq "logout: 204" "$code" 204
req GET /users/me "$ann"
expect_eq "a logged-out access token is refused at once" "$code" 401
before=$(count_tickets)
req POST /tickets "$ann" '{"title":"t","description":"d","tags":["a"]}'
expect_eq "a logged-out access token cannot create a ticket (401)" "$code" 401
check "…and is told why" jqc '.error.code == "unauthorized" and (.error.message | test("session has ended"))' "$work/body.json"
req POST /tickets "$ann" '{"title":5}'
expect_eq "…a bad body from it is 401 too, not 400" "$code" 401
expect_eq "…and nothing was written" "$(count_tickets)" "$before"
ann=$(login ann@example.test ann-pass-1)

# ---- admin: users, deactivation ------------------------------------------------------------------
req GET "/users?role=moderator" "$admin"
check "admin lists users by role" jqc '.total == 2 and ([.users[].email] | sort) == ["paul@example.test","rita@example.test"]' "$work/body.json"
req GET "/users?q=ANN" "$admin"
check "admin searches users" jqc '.total == 1 and .users[0].email == "ann@example.test"' "$work/body.json"
req POST "/users/$bob_id/deactivate" "$admin"
check "admin deactivates a user" jqc '.active == false' "$work/body.json"
req GET /users/me "$bob"
expect_eq "a deactivated user's token stops working at once" "$code" 401
req POST /tickets "$bob" '{"title":"t","description":"d","tags":["a"]}'
expect_eq "a deactivated user cannot create a ticket (401)" "$code" 401
check "…and is told why" jqc '.error.message | test("deactivated")' "$work/body.json"
# The post is answered later on Postgres (by the thread that wrote it): its metrics count
# the status it was answered with, success and refusal alike.
metrics=$(curl -s "$base/metrics")
check "/metrics counts ticket posts answered 201" grep -Eq '^cairn_http_requests_total\{route="/api/v1/tickets",method="POST",status="201"\} [1-9]' <<<"$metrics"
check "/metrics counts ticket posts refused 401" grep -Eq '^cairn_http_requests_total\{route="/api/v1/tickets",method="POST",status="401"\} [1-9]' <<<"$metrics"
req POST /auth/login "" '{"email":"bob@example.test","password":"bob-pass-1"}'
expect_eq "a deactivated user cannot log in (403)" "$code" 403
req POST "/users/$bob_id/reactivate" "$admin"
bob=$(login bob@example.test bob-pass-1)
check "a reactivated user logs in again" bash -c "[[ '$bob' == ey* ]]"
req PATCH "/users/$admin_id" "$admin" '{"role":"user"}'
expect_eq "the last admin cannot be demoted (409)" "$code" 409
req PATCH "/users/$pg_mod" "$admin" '{"skills":["Kubernetes","k8s"],"role":"moderator"}'
check "admin changes skills (normalised, de-duplicated)" jqc '.skills == ["kubernetes"]' "$work/body.json"

# ---- WebSocket: live updates go to the owner and staff only ---------------------------------------
ws_url="ws://${base#http://}/api/v1/ws"
node "$node_tools/ws_client.mjs" "$ws_url" "$ann" 8 >"$work/ws_ann.log" 2>&1 &
ws1=$!
node "$node_tools/ws_client.mjs" "$ws_url" "$bob" 8 >"$work/ws_bob.log" 2>&1 &
ws2=$!
node "$node_tools/ws_client.mjs" "$ws_url" "bad-token" 3 >"$work/ws_bad.log" 2>&1 &
ws3=$!
hello() { grep -q '"type":"hello"' "$1"; }
wait_for "websocket hello" 10 hello "$work/ws_ann.log"
wait_for "websocket hello" 10 hello "$work/ws_bob.log"
req PATCH "/tickets/$t1" "$paul" '{"status":"closed"}'
wait_for "ticket update on ann's socket" 10 grep -q "\"status\":\"closed\"" "$work/ws_ann.log"
check "the owner's socket receives the change" bash -c "grep '\"type\":\"ticket.updated\"' '$work/ws_ann.log' | grep -q '$t1'"
wait "$ws1" "$ws2" "$ws3" 2>/dev/null
check "another user's socket does not" bash -c "! grep -q '$t1' '$work/ws_bob.log'"
check "a bad token is refused before the upgrade (401)" grep -q '"status":401' "$work/ws_bad.log"
curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ann" "$V1/ws" >"$work/plain.txt"
expect_eq "a plain GET on the socket route is 426" "$(cat "$work/plain.txt")" 426

# ---- summary, delete ------------------------------------------------------------------------------
req GET /tickets/summary "$ann"
check "a user's summary counts their own tickets" jqc '.scope == "own" and .total == 1 and .by_status.closed == 1' "$work/body.json"
req GET /tickets/summary "$admin"
check "the admin's summary counts all tickets by status and priority" jqc '.scope == "all" and .total == 2 and (.by_priority | add) == 2' "$work/body.json"
req DELETE "/tickets/$t2" "$admin"
expect_eq "an admin deletes a ticket (204)" "$code" 204
req GET "/tickets/$t2" "$admin"
expect_eq "the deleted ticket is gone" "$code" 404

# ---- rate limits (5 login attempts per account per minute in this server) -------------------------
for _ in 1 2 3 4 5; do req POST /auth/login "" '{"email":"rita@example.test","password":"wrong-wrong"}'; done
headers=$(curl -s -D - -o "$work/body.json" -X POST "$V1/auth/login" -d '{"email":"rita@example.test","password":"mod-pass-11"}')
check "the sixth login attempt is 429" grep -q "^HTTP/1.1 429" <<<"$headers"
check "…with Retry-After" grep -qi "^retry-after: [0-9]" <<<"$headers"
check "…in the error shape" jqc '.error.code == "rate_limited"' "$work/body.json"

"$cairn" mail list --db "$db" --json >"$work/mail.json" 2>/dev/null
check "cairn mail list shows every mail sent" jqc 'length >= 5 and any(.[]; .to == "paul@example.test")' "$work/mail.json"

# The curl tour in examples/ runs as documented.
if bash "$here/../../examples/tickets_curl.sh" "$base" >"$work/tour.log" 2>&1; then
    check "examples/tickets_curl.sh runs and its ticket is analysed" grep -Eq '"priority": "(low|medium|high)"' "$work/tour.log"
else
    bad "examples/tickets_curl.sh runs" "$(tail -5 "$work/tour.log")"
fi
check "…and its logout takes effect" grep -q "after logout: 401" "$work/tour.log"

stop_server
expect_eq "the server exits cleanly on SIGTERM" "$?" 0

# ---- a server killed mid-flow: each ticket's writes land once ------------------------------------
# 200 tickets on a fresh database; the server is killed with SIGKILL once some of their runs
# have ended and started again with a short lease. Every run completes, and every ticket
# has one change row per write of its run (created, in progress, analysis, assignment): the
# steps that write the ticket commit each write with their record (ctx.transaction), so a
# step that was cut off is rolled back whole and runs again, and one that committed is not.
pick_db "$backend" crash
crash_db=$db
q() {  # q SQL: one value from the crash test's database
    if [[ $backend == postgres ]]; then psql -tAq "$crash_db" -c "$1"; else sqlite3 -cmd ".timeout 10000" "${crash_db#sqlite://}" "$1"; fi
}
mk --email crash-mod@example.test --role moderator --skills postgres,database >/dev/null
CAIRN_AUTH_RATE_IP=0 start_server crash --db "$crash_db" --lease-ms 1500 || bad "the crash test's server starts"
token=$(curl -s "$base/api/v1/auth/register" -d '{"email":"crash-user@example.test","password":"crash-pass-1"}' | jq -r .access_token)
for i in $(seq 1 200); do
    ((i > 1)) && echo next
    printf 'url = "%s/tickets"\nheader = "Authorization: Bearer %s"\nheader = "Content-Type: application/json"\ndata = "{\\"title\\":\\"Deadlock %d\\",\\"description\\":\\"Postgres reports deadlocks on the orders table\\",\\"tags\\":[\\"bug\\"]}"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\n' "$base/api/v1" "$token" "$i"
done >"$work/crash.curl"
created=$(curl --no-progress-meter --parallel --parallel-max 16 --config "$work/crash.curl" | grep -c '^201$')
expect_eq "200 tickets created for the crash" "$created" 200
ended() { [[ $(q "SELECT count(*) FROM runs WHERE workflow_id = 'ticket-created' AND status = 'completed'") -ge $1 ]]; }
wait_for "some ticket-created runs end" 30 ended 20
at_kill=$(q "SELECT count(*) FROM runs WHERE workflow_id = 'ticket-created' AND status = 'completed'")
kill -9 "$server_pid"
wait "$server_pid" 2>/dev/null
check "the server was killed with runs still in flight ($at_kill of 200 done)" test "$at_kill" -lt 200
start_server crash-again --db "$crash_db" --lease-ms 1500 || bad "the server starts again"
wait_for "every ticket-created run completes after the restart" 60 ended 200
check "every ticket-created run completed after the restart" ended 200
expect_eq "every ticket was assigned" "$(q "SELECT count(*) FROM tickets WHERE assigned_to IS NOT NULL AND status = 'in_progress'")" 200
expect_eq "every ticket has exactly four change rows (each write once)" \
    "$(q "SELECT count(*) FROM (SELECT ticket_id FROM ticket_changes GROUP BY ticket_id HAVING count(*) = 4) once")" 200
expect_eq "…and no step of a run completed twice" \
    "$(q "SELECT count(*) FROM (SELECT run_id, step_key FROM step_attempts WHERE outcome = 'completed' GROUP BY run_id, step_key HAVING count(*) > 1) twice")" 0
stop_server
finish
