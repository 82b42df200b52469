#!/usr/bin/env bash
# The engine's HTTP API through a real HTTP client (curl) against a real `cairn serve`:
# every route, its error paths, API keys, idempotent ingestion, retry/replay/cancel, the
# SSE stream with Last-Event-ID, /metrics, size limits and a slow client timing out.
#
# usage: api_test.sh PATH/TO/cairn sqlite|postgres
set -uo pipefail

cairn=$(realpath "${1:?usage: api_test.sh PATH/TO/cairn sqlite|postgres}")
backend=${2:-sqlite}
work=$(mktemp -d)
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT

pick_db "$backend" api

admin=$("$cairn" keys create --name tests --db "$db" 2>/dev/null)
events_key=$("$cairn" keys create --name producer --scope events --db "$db" 2>/dev/null)
check "keys create prints a secret" bash -c "[[ '$admin' =~ ^ck_[0-9a-f]{64}$ ]]"

start_server api --db "$db" --examples --read-timeout-ms 1000 || { bad "server starts"; finish; exit 1; }
A=(-H "Authorization: Bearer $admin")
E=(-H "Authorization: Bearer $events_key")
status() { curl -s -o "$work/body.json" -w '%{http_code}' "$@"; }
body() { cat "$work/body.json"; }
count_events() { curl -s "${A[@]}" "$base/api/engine/events?limit=1000" | jq '.events | length'; }

# ---- keys ---------------------------------------------------------------------------------

expect_eq "no key: 401" "$(status "$base/api/engine/runs")" 401
check "401 has the error shape and no data" bash -c "jq -e >/dev/null '.error.code == \"unauthorized\" and (has(\"runs\") | not)' '$work/body.json'"
expect_eq "a wrong key: 401" "$(status -H 'Authorization: Bearer ck_0000000000000000000000000000000000000000000000000000000000000000' "$base/api/engine/runs")" 401
expect_eq "not a bearer token: 401" "$(status -H "Authorization: Basic $admin" "$base/api/engine/runs")" 401
expect_eq "an events key cannot list runs: 403" "$(status "${E[@]}" "$base/api/engine/runs")" 403
expect_eq "no key cannot send events: 401" "$(status -X POST -d '{"name":"example/hello"}' "$base/api/engine/events")" 401

# ---- sending events -------------------------------------------------------------------------

before=$(count_events)
expect_eq "bad JSON: 400" "$(status -X POST "${E[@]}" -d '{"name":' "$base/api/engine/events")" 400
expect_eq "bad JSON says invalid_json" "$(body | jq -r .error.code)" invalid_json
expect_eq "missing name: 400" "$(status -X POST "${E[@]}" -d '{"data":{}}' "$base/api/engine/events")" 400
expect_eq "the detail names the field" "$(body | jq -r '.error.details[0].field')" name
expect_eq "wrong types: 400" "$(status -X POST "${E[@]}" -d '{"name":5,"ts":"yesterday","idempotency_key":7}' "$base/api/engine/events")" 400
expect_eq "every bad field is reported" "$(body | jq -r '[.error.details[].field] | sort | join(",")')" "idempotency_key,name,ts"
expect_eq "an unknown field: 400" "$(status -X POST "${E[@]}" -d '{"name":"x","colour":"red"}' "$base/api/engine/events")" 400
expect_eq "a non-UUID id: 400" "$(status -X POST "${E[@]}" -d '{"name":"x","id":"abc"}' "$base/api/engine/events")" 400
expect_eq "an empty batch: 400" "$(status -X POST "${E[@]}" -d '[]' "$base/api/engine/events")" 400
expect_eq "a batch with one bad event: 400" "$(status -X POST "${E[@]}" -d '[{"name":"example/hello"},{"name":""}]' "$base/api/engine/events")" 400
expect_eq "the bad batch event is located" "$(body | jq -r '.error.details[0].field')" "[1].name"
expect_eq "nothing was written by bad requests" "$(count_events)" "$before"

expect_eq "an event: 201" "$(status -X POST "${E[@]}" -d '{"name":"example/hello","data":{"name":"ada"},"idempotency_key":"k-1"}' "$base/api/engine/events")" 201
first=$(body)
run1=$(jq -r '.run_ids[0]' <<<"$first")
check "it started one run of hello" test "$(jq '.run_ids | length' <<<"$first")" = 1
expect_eq "the same idempotency key again: 200" "$(status -X POST "${E[@]}" -d '{"name":"example/hello","data":{"name":"bob"},"idempotency_key":"k-1"}' "$base/api/engine/events")" 200
check "a duplicate says so and returns the first runs" bash -c "jq -e >/dev/null '.duplicate and .run_ids[0] == \"$run1\"' '$work/body.json'"
event1=$(jq -r .id <<<"$first")
expect_eq "the same event id again: 200" "$(status -X POST "${E[@]}" -d "{\"name\":\"example/hello\",\"id\":\"$event1\"}" "$base/api/engine/events")" 200
expect_eq "a batch: 200" "$(status -X POST "${E[@]}" -d '[{"name":"example/hello","data":{"name":"x"}},{"name":"example/hello"},{"name":"nobody/listens"}]' "$base/api/engine/events")" 200
expect_eq "the batch answers per event" "$(body | jq -c '[.events[].run_ids | length]')" "[1,1,0]"

wait_for "hello runs complete" 10 bash -c "curl -s ${A[*]@Q} '$base/api/engine/runs?workflow=hello&status=completed' | jq -e >/dev/null '.runs | length == 3'"

# ---- listing and showing runs ----------------------------------------------------------------

expect_eq "GET runs: 200" "$(status "${A[@]}" "$base/api/engine/runs")" 200
expect_eq "filter by workflow and status" "$(curl -s "${A[@]}" "$base/api/engine/runs?workflow=hello&status=completed" | jq '.runs | length')" 3
expect_eq "filter by event name" "$(curl -s "${A[@]}" "$base/api/engine/runs?event=example/hello" | jq '.runs | length')" 3
expect_eq "search by run id prefix" "$(curl -s "${A[@]}" "$base/api/engine/runs?q=${run1:0:20}" | jq -r '.runs[0].id')" "$run1"
expect_eq "search by event id" "$(curl -s "${A[@]}" "$base/api/engine/runs?q=$event1" | jq -r '.runs[0].id')" "$run1"
expect_eq "a time range in the future is empty" "$(curl -s "${A[@]}" "$base/api/engine/runs?from=2999-01-01T00:00:00Z" | jq '.runs | length')" 0
expect_eq "a bad status: 400" "$(status "${A[@]}" "$base/api/engine/runs?status=sleepy")" 400
expect_eq "a bad time: 400" "$(status "${A[@]}" "$base/api/engine/runs?from=tuesday")" 400
expect_eq "limit 0: 400" "$(status "${A[@]}" "$base/api/engine/runs?limit=0")" 400
page1=$(curl -s "${A[@]}" "$base/api/engine/runs?limit=2")
cursor=$(jq -r .next_cursor <<<"$page1")
page2=$(curl -s "${A[@]}" "$base/api/engine/runs?limit=2&cursor=$cursor")
expect_eq "keyset paging returns every run once" "$( (jq -r '.runs[].id' <<<"$page1"; jq -r '.runs[].id' <<<"$page2") | sort -u | wc -l)" 3
expect_eq "the last page has no cursor" "$(jq -r .next_cursor <<<"$page2")" null

expect_eq "GET runs/{id}: 200" "$(status "${A[@]}" "$base/api/engine/runs/$run1")" 200
check "the run shows its event, steps and attempts" bash -c "jq -e >/dev/null '.event.data.name == \"ada\" and (.steps | length) == 5 and .steps[0].key == \"greet\" and (.steps[0].history | length) == 1 and .output.greeting == \"hello, ada\" and (.created_at | test(\"Z$\"))' '$work/body.json'"
expect_eq "an unknown run: 404" "$(status "${A[@]}" "$base/api/engine/runs/nope")" 404
expect_eq "404 says run_not_found" "$(body | jq -r .error.code)" run_not_found

# ---- retry, replay, cancel -------------------------------------------------------------------

until_ms=$(( $(date +%s%3N) + 1500 ))
curl -s -X POST "${A[@]}" -d "{\"name\":\"example/flaky\",\"data\":{\"fail_until_ms\":$until_ms}}" "$base/api/engine/events" >"$work/flaky.json"
flaky=$(jq -r '.run_ids[0]' "$work/flaky.json")
wait_for "the flaky run fails" 10 bash -c "curl -s ${A[*]@Q} '$base/api/engine/runs/$flaky' | jq -e >/dev/null '.status == \"failed\"'"
expect_eq "the failure is shown" "$(curl -s "${A[@]}" "$base/api/engine/runs/$flaky" | jq -r '.error.message')" "service unavailable"
sleep 1.6
expect_eq "retry a failed run: 200" "$(status -X POST "${A[@]}" "$base/api/engine/runs/$flaky/retry")" 200
wait_for "the retried run completes" 10 bash -c "curl -s ${A[*]@Q} '$base/api/engine/runs/$flaky' | jq -e >/dev/null '.status == \"completed\"'"
check "retry kept the completed step and re-ran the failed one" bash -c "curl -s ${A[*]@Q} '$base/api/engine/runs/$flaky' | jq -e >/dev/null '.attempt == 1 and (.steps[0].history | length) == 1 and (.steps[1].history | length) == 2'"
expect_eq "retry a completed run: 409" "$(status -X POST "${A[@]}" "$base/api/engine/runs/$run1/retry")" 409
expect_eq "retry an unknown run: 404" "$(status -X POST "${A[@]}" "$base/api/engine/runs/nope/retry")" 404

expect_eq "replay from a step: 201" "$(status -X POST "${A[@]}" -d '{"from_step":"shout"}' "$base/api/engine/runs/$run1/replay")" 201
replay=$(body | jq -r .id)
check "the replay points at its original" bash -c "jq -e >/dev/null '.replay_of == \"$run1\"' '$work/body.json'"
wait_for "the replay completes" 10 bash -c "curl -s ${A[*]@Q} '$base/api/engine/runs/$replay' | jq -e >/dev/null '.status == \"completed\"'"
check "the replay copied the steps before shout" bash -c "curl -s ${A[*]@Q} '$base/api/engine/runs/$replay' | jq -e >/dev/null '(.steps[0].history | length) == 0 and (.steps[2].history | length) == 1'"
expect_eq "replay from scratch: 201" "$(status -X POST "${A[@]}" "$base/api/engine/runs/$run1/replay")" 201
expect_eq "replay from an unknown step: 422" "$(status -X POST "${A[@]}" -d '{"from_step":"nope"}' "$base/api/engine/runs/$run1/replay")" 422
expect_eq "replay with a wrong type: 400" "$(status -X POST "${A[@]}" -d '{"from_step":3}' "$base/api/engine/runs/$run1/replay")" 400
expect_eq "replay with bad JSON: 400" "$(status -X POST "${A[@]}" -d '{' "$base/api/engine/runs/$run1/replay")" 400

curl -s -X POST "${A[@]}" -d '{"name":"example/hello","data":{"work_ms":1500}}' "$base/api/engine/events" >"$work/slow.json"
slow=$(jq -r '.run_ids[0]' "$work/slow.json")
wait_for "the slow run starts" 10 bash -c "curl -s ${A[*]@Q} '$base/api/engine/runs/$slow' | jq -e >/dev/null '.status == \"running\"'"
expect_eq "cancel a running run: 200" "$(status -X POST "${A[@]}" "$base/api/engine/runs/$slow/cancel")" 200
expect_eq "it is cancelled at once" "$(body | jq -r .status)" cancelled
sleep 2
check "it stopped at the next step boundary" bash -c "curl -s ${A[*]@Q} '$base/api/engine/runs/$slow' | jq -e >/dev/null '.status == \"cancelled\" and (.steps | length) <= 2'"
expect_eq "cancel an ended run: 409" "$(status -X POST "${A[@]}" "$base/api/engine/runs/$run1/cancel")" 409
expect_eq "cancel an unknown run: 404" "$(status -X POST "${A[@]}" "$base/api/engine/runs/nope/cancel")" 404
expect_eq "GET on a POST route: 405" "$(status "${A[@]}" "$base/api/engine/runs/$run1/cancel")" 405
check "a 405 says which methods are allowed" bash -c "curl -s -D - -o /dev/null ${A[*]@Q} '$base/api/engine/runs/$run1/cancel' | grep -qi '^allow: POST'"

# ---- replay with edited data, pause and resume, bulk operations -------------------------------

expect_eq "replay with edited data: 201" "$(status -X POST "${A[@]}" -d '{"data":{"name":"eve"}}' "$base/api/engine/runs/$run1/replay")" 201
edited=$(body | jq -r .id)
wait_for "the edited replay completes" 10 bash -c "curl -s ${A[*]@Q} '$base/api/engine/runs/$edited' | jq -e >/dev/null '.status == \"completed\"'"
check "the edited replay ran on the new data, under the same event name" bash -c "curl -s ${A[*]@Q} '$base/api/engine/runs/$edited' | jq -e >/dev/null '.output.greeting == \"hello, eve\" and .event.name == \"example/hello\" and .event.id != \"$event1\" and .replay_of == \"$run1\"'"
expect_eq "the original run's event is unchanged" "$(curl -s "${A[@]}" "$base/api/engine/runs/$run1" | jq -r .event.data.name)" ada
expect_eq "replay with an unknown field: 400" "$(status -X POST "${A[@]}" -d '{"dta":{}}' "$base/api/engine/runs/$run1/replay")" 400

expect_eq "pause an unknown workflow: 404" "$(status -X POST "${A[@]}" "$base/api/engine/workflows/nope/pause")" 404
expect_eq "pause needs an admin key: 403" "$(status -X POST "${E[@]}" "$base/api/engine/workflows/hello/pause")" 403
expect_eq "pause hello: 200" "$(status -X POST "${A[@]}" "$base/api/engine/workflows/hello/pause")" 200
check "it says paused" bash -c "jq -e >/dev/null '.paused == true and .changed == true and (.paused_at | type) == \"number\"' '$work/body.json'"
expect_eq "pausing again changes nothing: 200" "$(status -X POST "${A[@]}" "$base/api/engine/workflows/hello/pause")" 200
expect_eq "and says so" "$(body | jq -c '[.paused, .changed]')" "[true,false]"
paused_runs=()
for i in 1 2 3; do
    paused_runs+=("$(curl -s -X POST "${E[@]}" -d "{\"name\":\"example/hello\",\"data\":{\"name\":\"p$i\"}}" "$base/api/engine/events" | jq -r '.run_ids[0]')")
done
sleep 1
expect_eq "while paused, the events' runs stay queued" "$(curl -s "${A[@]}" "$base/api/engine/runs?workflow=hello&status=queued" | jq '.runs | length')" 3
check "workflows show hello paused" bash -c "curl -s ${A[*]@Q} '$base/api/engine/workflows' | jq -e >/dev/null '.workflows[] | select(.id == \"hello\") | .paused == true'"
check "/metrics shows the pause" bash -c "curl -s '$base/metrics' | grep -q '^cairn_workflow_paused{workflow=\"hello\"} 1$'"
expect_eq "bulk dry run counts the matching runs: 200" "$(status -X POST "${A[@]}" -d '{"workflow":"hello","status":"queued","dry_run":true}' "$base/api/engine/runs/cancel")" 200
expect_eq "it matched the three queued runs" "$(body | jq .matched)" 3
expect_eq "and cancelled none" "$(curl -s "${A[@]}" "$base/api/engine/runs?workflow=hello&status=queued" | jq '.runs | length')" 3
expect_eq "a bulk filter with a bad status: 400" "$(status -X POST "${A[@]}" -d '{"status":"sleepy"}' "$base/api/engine/runs/cancel")" 400
expect_eq "a bulk filter with an unknown field: 400" "$(status -X POST "${A[@]}" -d '{"wrkflow":"hello"}' "$base/api/engine/runs/retry")" 400
expect_eq "a bulk filter with a bad time: 400" "$(status -X POST "${A[@]}" -d '{"from":"tuesday"}' "$base/api/engine/runs/replay")" 400
expect_eq "a bulk body that is not an object: 400" "$(status -X POST "${A[@]}" -d '[1]' "$base/api/engine/runs/cancel")" 400
expect_eq "bulk operations need an admin key: 403" "$(status -X POST "${E[@]}" -d '{}' "$base/api/engine/runs/cancel")" 403
expect_eq "cancel the first queued run alone" "$(status -X POST "${A[@]}" "$base/api/engine/runs/${paused_runs[0]}/cancel")" 200
expect_eq "resume hello: 200" "$(status -X POST "${A[@]}" "$base/api/engine/workflows/hello/resume")" 200
expect_eq "it says resumed" "$(body | jq -c '[.paused, .changed]')" "[false,true]"
wait_for "the queued runs start once resumed" 10 bash -c "curl -s ${A[*]@Q} '$base/api/engine/runs?workflow=hello&status=queued' | jq -e >/dev/null '.runs | length == 0'"
wait_for "and complete" 10 bash -c "for r in ${paused_runs[1]} ${paused_runs[2]}; do curl -s ${A[*]@Q} '$base/api/engine/runs/'\$r | jq -e >/dev/null '.status == \"completed\"' || exit 1; done"
expect_eq "the cancelled one stays cancelled" "$(curl -s "${A[@]}" "$base/api/engine/runs/${paused_runs[0]}" | jq -r .status)" cancelled

expect_eq "bulk retry by filter: 200" "$(status -X POST "${A[@]}" -d '{"workflow":"hello","status":"cancelled"}' "$base/api/engine/runs/retry")" 200
check "it retried the cancelled hello runs" bash -c "jq -e >/dev/null '.matched >= 2 and .retried == .matched and (.run_ids | index(\"${paused_runs[0]}\")) != null' '$work/body.json'"
wait_for "the retried run completes" 10 bash -c "curl -s ${A[*]@Q} '$base/api/engine/runs/${paused_runs[0]}' | jq -e >/dev/null '.status == \"completed\"'"
hello_total=$(curl -s "${A[@]}" "$base/api/engine/runs?workflow=hello&limit=1000" | jq '.runs | length')
expect_eq "bulk replay of the runs since a time: 200" "$(status -X POST "${A[@]}" -d "{\"workflow\":\"hello\",\"event\":\"example/hello\",\"from\":$(( $(date +%s%3N) - 3600000 ))}" "$base/api/engine/runs/replay")" 200
check "it replayed each once (not the replays it made)" bash -c "jq -e >/dev/null '.matched == $hello_total and .replayed == $hello_total and (.run_ids | length) == $hello_total' '$work/body.json'"
expect_eq "there are twice as many hello runs" "$(curl -s "${A[@]}" "$base/api/engine/runs?workflow=hello&limit=1000" | jq '.runs | length')" $(( hello_total * 2 ))
wait_for "the replays complete" 40 bash -c "curl -s ${A[*]@Q} '$base/api/engine/runs?workflow=hello&status=completed&limit=1000' | jq -e >/dev/null '.runs | length == $(( hello_total * 2 ))'"
expect_eq "bulk cancel of ended runs cancels nothing" "$(curl -s -X POST "${A[@]}" -d '{"workflow":"hello","status":"completed"}' "$base/api/engine/runs/cancel" | jq -c '[.matched > 0, .cancelled]')" "[true,0]"

# ---- workflows, events, metrics, openapi -----------------------------------------------------

expect_eq "GET workflows: 200" "$(status "${A[@]}" "$base/api/engine/workflows")" 200
check "workflows list hello with triggers, options and counts" bash -c "jq -e >/dev/null '.workflows[] | select(.id == \"hello\") | .triggers == [\"example/hello\"] and .options.max_attempts == 4 and .counts.completed >= 3' '$work/body.json'"
expect_eq "GET events: 200" "$(status "${A[@]}" "$base/api/engine/events?name=example/flaky")" 200
check "events list the runs each started" bash -c "jq -e >/dev/null '.events[0].run_ids == [\"$flaky\"]' '$work/body.json'"
metrics=$(curl -s "$base/metrics")
check "/metrics counts runs by workflow and status" grep -q 'cairn_runs{workflow="hello",status="completed"}' <<<"$metrics"
check "/metrics counts the runs this server ended" grep -Eq '^cairn_runs_ended_total [1-9][0-9]*$' <<<"$metrics"
check "/metrics has the queue gauges" grep -q '^cairn_queue_oldest_due_age_seconds ' <<<"$metrics"
check "/metrics has step duration histograms" grep -q 'cairn_step_duration_seconds_bucket{workflow="hello",le="+Inf"}' <<<"$metrics"
check "/metrics counts HTTP requests by route and status" grep -q 'cairn_http_requests_total{route="/api/engine/runs",method="GET",status="200"}' <<<"$metrics"
check "workflows report last-hour counts, p50 and failure rate" bash -c "curl -s ${A[*]@Q} '$base/api/engine/workflows' | jq -e >/dev/null '.workflows[] | select(.id == \"hello\") | .last_hour.counts.completed >= 3 and .last_hour.p50_ms != null and .last_day.failure_rate == 0'"
expect_eq "/inspector redirects to /inspector/" "$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "$base/inspector")" "301 $base/inspector/"
check "the inspector page is served with a strict content security policy" bash -c "curl -s -D - -o /dev/null '$base/inspector/' | grep -qi \"^content-security-policy: default-src 'self'\""
expect_eq "the inspector script is JavaScript" "$(curl -s -o /dev/null -w '%{content_type}' "$base/inspector/app.js")" "text/javascript; charset=utf-8"
expect_eq "an unknown inspector file: 404" "$(status "$base/inspector/nope.js")" 404
check "the OpenAPI document is public JSON listing the routes" bash -c "curl -s '$base/api/engine/openapi.json' | jq -e >/dev/null '.paths[\"/api/engine/runs/{id}/replay\"].post'"

# ---- live stream ---------------------------------------------------------------------------

# Starts reading the stream into FILE in the background (its pid in $sse).
watch_stream() {
    curl -s -N "${A[@]}" "$base/api/engine/stream" >"$1" &
    sse=$!
    pids+=("$sse")
    sleep 0.5
}
# Sends an example/hello event with DATA and prints the id of the run it started.
send_hello() {
    curl -s -X POST "${A[@]}" -d "{\"name\":\"example/hello\",\"data\":$1}" \
        "$base/api/engine/events" | jq -r '.run_ids[0] // empty'
}

watch_stream "$work/sse.txt"
live=$(send_hello '{"name":"live"}')
check "the live event started a run" test -n "$live"
check "the stream delivers the new run within a second" wait_for "run in stream" 1 grep -q "$live" "$work/sse.txt"
check "stream events have ids and the run event type" bash -c "grep -q '^id: [0-9]*$' '$work/sse.txt' && grep -q '^event: run$' '$work/sse.txt'"
kill "$sse" 2>/dev/null
resume_from=$(grep -m1 '^id: ' "$work/sse.txt" | cut -d' ' -f2)
later=$(send_hello '{"name":"later"}')
check "the later event started a run" test -n "$later"
timeout 3 curl -s -N "${A[@]}" -H "Last-Event-ID: $resume_from" "$base/api/engine/stream" >"$work/resume.txt"
check "Last-Event-ID resumes with the changes made meanwhile" grep -q "$later" "$work/resume.txt"
check "a resumed stream skips what came before the id" bash -c "! grep -q '\"id\":\"$run1\"' '$work/resume.txt'"
expect_eq "a bad Last-Event-ID: 400" "$(status "${A[@]}" -H 'Last-Event-ID: yesterday' "$base/api/engine/stream")" 400

# A step's progress is a change of its run too, though it does not write the run's row.
watch_stream "$work/progress.txt"
stepped=$(send_hello '{"name":"steps","work_ms":600}')
check "the stepped event started a run" test -n "$stepped"
wait_for "the stepped run completes" 15 bash -c "curl -s ${A[*]@Q} '$base/api/engine/runs/$stepped' | jq -e >/dev/null '.status == \"completed\"'"
sleep 0.6
kill "$sse" 2>/dev/null
running_changes() {
    sed -n 's/^data: //p' "$work/progress.txt" |
        jq -r --arg id "$stepped" 'select(.id == $id and .status == "running") | .updated_at' | sort -u | wc -l
}
check "the stream sends a running run again at its steps' progress" test "$(running_changes)" -ge 4
check "and then the run's end" bash -c "sed -n 's/^data: //p' '$work/progress.txt' | jq -e --arg id '$stepped' 'select(.id == \$id and .status == \"completed\")' >/dev/null"

# ---- limits ------------------------------------------------------------------------------------

head -c 1100000 /dev/zero | tr '\0' 'a' >"$work/big.txt"
expect_eq "an oversized body: 413" "$(status -X POST "${E[@]}" --data-binary @"$work/big.txt" "$base/api/engine/events")" 413
host_port=${base#http://}
exec 3<>"/dev/tcp/${host_port%:*}/${host_port#*:}"
printf 'GET /health HTTP/1.1\r\nHost: x\r\n' >&3
start=$(date +%s%3N)
IFS= read -r -t 5 reply <&3
rc=$?
elapsed=$(( $(date +%s%3N) - start ))
exec 3<&-
check "a slow client is cut off by the read timeout" bash -c "[[ $rc != 142 && $elapsed -lt 4000 && -z '${reply:-}' ]]"
expect_eq "the server still answers" "$(status "$base/health")" 200
check "responses carry X-Request-Id" bash -c "curl -s -D - -o /dev/null ${A[*]@Q} '$base/api/engine/runs' | grep -qi '^x-request-id: '"

# ---- the example plugin (examples/notes_plugin.cpp): its route, table and workflow ------
expect_eq "example plugin route needs a key" "$(status -X POST "$base/api/example/notes" -d '{"text":"x"}')" 401
expect_eq "example plugin: POST a note" "$(status "${A[@]}" -X POST "$base/api/example/notes" -d '{"text":"three little words"}')" 201
note_counted() { curl -s "${A[@]}" "$base/api/example/notes" | jq -e '.notes[0].words == 3' >/dev/null; }
wait_for "note-words run" 20 note_counted
check "example plugin: its workflow counted the words" note_counted
expect_eq "example plugin: bad input is 400" "$(status "${A[@]}" -X POST "$base/api/example/notes" -d '{"text":5}')" 400

stop_server
check "the server stops with exit 0" test $? = 0
finish
