#!/usr/bin/env bash
# A tour of the ticket API with curl and jq, against a running `cairn serve`:
# register, log in, open a ticket, watch the ticket-created workflow analyse and assign
# it, reply, refresh the session and log out. docs/tickets.md explains each call.
#
# usage: examples/tickets_curl.sh [BASE_URL]      (default http://127.0.0.1:8080)
# Create staff first so the ticket has someone to go to, e.g.
#   cairn users create --email ops@example.com --role moderator --skills postgresql
set -euo pipefail
B=${1:-http://127.0.0.1:8080}/api/v1
email="demo-$(date +%s)-$RANDOM@example.com"
json() { curl -sS -H 'Content-Type: application/json' "$@"; }

echo "== register $email"
session=$(json "$B/auth/register" -d "{\"email\":\"$email\",\"password\":\"demo-password-1\",\"name\":\"Demo\"}")
jq '{user: .user.email, role: .user.role}' <<<"$session"

echo "== log in"
session=$(json "$B/auth/login" -d "{\"email\":\"$email\",\"password\":\"demo-password-1\"}")
token=$(jq -r .access_token <<<"$session")
auth=(-H "Authorization: Bearer $token")

echo "== open a ticket (the ticket and its ticket/created event commit together)"
ticket=$(json "${auth[@]}" "$B/tickets" -d '{
  "title": "Checkout fails with a Postgres deadlock",
  "description": "Since this morning, checkout intermittently fails: deadlock detected on the orders table.",
  "tags": ["bug", "database"],
  "deadline": "2099-12-31T17:00:00Z"}')
id=$(jq -r .id <<<"$ticket")
jq '{id, status, run_id}' <<<"$ticket"

echo "== wait for the ticket-created run to analyse it"
for _ in $(seq 1 50); do
    ticket=$(json "${auth[@]}" "$B/tickets/$id")
    [[ $(jq -r .priority <<<"$ticket") != null ]] && break
    sleep 0.2
done
jq '{status, priority, related_skills, summary, assigned_to}' <<<"$ticket"

echo "== reply, list my tickets, and the summary"
json "${auth[@]}" "$B/tickets/$id/replies" -d '{"body":"It happens on every third order."}' | jq '{author_name, body}'
json "${auth[@]}" "$B/tickets?sort=-created_at&limit=5" | jq '{total, titles: [.tickets[].title]}'
json "${auth[@]}" "$B/tickets/summary" | jq '{total, by_status}'

echo "== refresh (rotates the refresh token), then log out"
session=$(json "$B/auth/refresh" -d "{\"refresh_token\":\"$(jq -r .refresh_token <<<"$session")\"}")
token=$(jq -r .access_token <<<"$session")
curl -sS -o /dev/null -w 'logout: %{http_code}\n' -X POST -H "Authorization: Bearer $token" "$B/auth/logout"
curl -sS -o /dev/null -w 'after logout: %{http_code}\n' -H "Authorization: Bearer $token" "$B/users/me"
