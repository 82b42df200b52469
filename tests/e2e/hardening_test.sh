#!/usr/bin/env bash
# Hostile input against a real `cairn serve`: each check here failed on a build without the
# guard it names (see docs/security.md for the limits and their settings).
#
# usage: hardening_test.sh PATH/TO/cairn sqlite|postgres
set -uo pipefail

cairn=$(realpath "${1:?usage: hardening_test.sh PATH/TO/cairn sqlite|postgres}")
backend=${2:-sqlite}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
source "$here/lib.sh"
trap cleanup EXIT

node_tools="$here/../ui"
"$node_tools/install.sh" || { echo "FAIL: installing the Node test tools"; exit 1; }

pick_db "$backend" hardening
key=$("$cairn" keys create --name hardening --db "$db" 2>/dev/null)
"$cairn" users create --db "$db" --email admin@example.test --role admin --password admin-pass-1 >/dev/null 2>&1

start_server hardening --db "$db" || { bad "server starts"; finish; exit 1; }
V1="$base/api/v1"
K=(-H "Authorization: Bearer $key")
status() { curl -s -o "$work/body.json" -w '%{http_code}' "$@"; }
jb() { jq -r "$@" "$work/body.json"; }
alive() { [[ $(curl -s -o /dev/null -w '%{http_code}' "$base/health") == 200 ]]; }
token_of() {  # token_of EMAIL PASSWORD: registers (when new) and logs in; prints the access token
    curl -s -o /dev/null "$V1/auth/register" -H 'Content-Type: application/json' \
        -d "{\"email\":\"$1\",\"password\":\"$2\"}"
    curl -s "$V1/auth/login" -H 'Content-Type: application/json' \
        -d "{\"email\":\"$1\",\"password\":\"$2\"}" | jq -r .access_token
}
user=$(token_of ann@example.test ann-pass-1)
U=(-H "Authorization: Bearer $user")

# ---- deeply nested JSON: refused at parse time, never copied ---------------------------
# 400,000 levels is 800 KB, inside the 1 MiB body limit; copying such a value recursed once
# per level and overflowed the stack, killing the server with its workers.
deep="$work/deep.json"
{
    printf '{"name":"x","title":"t","data":'
    head -c 400000 /dev/zero | tr '\0' '['
    head -c 400000 /dev/zero | tr '\0' ']'
    printf '}'
} >"$deep"
expect_eq "deep JSON to /api/engine/events: 400" \
    "$(status -X POST "${K[@]}" -H 'Content-Type: application/json' --data-binary "@$deep" "$base/api/engine/events")" 400
expect_eq "…saying how deep is allowed" "$(jb .error.message)" "the request body: the JSON nests deeper than 64 levels"
check "…and the server is alive" alive
expect_eq "deep JSON to /api/v1/tickets: 400" \
    "$(status -X POST "${U[@]}" -H 'Content-Type: application/json' --data-binary "@$deep" "$V1/tickets")" 400
check "…and the server is alive" alive
# WebSocket messages are at most 64 KiB: 30,000 levels fit.
{
    printf '{"type":"ping","x":'
    head -c 30000 /dev/zero | tr '\0' '['
    head -c 30000 /dev/zero | tr '\0' ']'
    printf '}'
} >"$work/deep_ws.json"
node "$node_tools/ws_client.mjs" "ws://${base#http://}/api/v1/ws" "$user" 5 "$work/deep_ws.json" >"$work/ws_deep.log" 2>&1
check "deep JSON on the WebSocket is answered with an error" grep -q '"code":"invalid_json"' "$work/ws_deep.log"
check "…and the server is alive" alive

# ---- metrics labels come from a fixed set -------------------------------------------------
for i in $(seq 1 20); do
    curl -s -o /dev/null -X "BREW$i$RANDOM" "$base/health"
    curl -s -o /dev/null "$base/no/such/path/$i$RANDOM"
done
curl -s "$base/metrics" >"$work/metrics.txt"
check "random methods are counted as method=\"other\"" grep -q 'route="/health",method="other"' "$work/metrics.txt"
expect_eq "…and add no series of their own" "$(grep -c 'method="BREW' "$work/metrics.txt")" 0
expect_eq "unmatched paths add no series of their own" "$(grep -c 'route="/no/such' "$work/metrics.txt")" 0
check "…they are counted as route=\"unmatched\"" grep -q 'route="unmatched",method="GET",status="404"' "$work/metrics.txt"

stop_server
expect_eq "the server exits cleanly on SIGTERM" "$?" 0
finish
