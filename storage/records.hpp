#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace cairn::storage {

// The records of the run store (RunStore): what the engine writes and reads about events,
// runs, steps, the queue and waits. docs/storage.md describes the tables.

namespace run_status {
inline constexpr std::string_view kQueued = "queued";
inline constexpr std::string_view kRunning = "running";
inline constexpr std::string_view kSleeping = "sleeping";
inline constexpr std::string_view kWaiting = "waiting";
inline constexpr std::string_view kCompleted = "completed";
inline constexpr std::string_view kFailed = "failed";
inline constexpr std::string_view kCancelled = "cancelled";
}  // namespace run_status

struct NewEvent {
    std::string name;
    std::string data = "{}";                     // JSON text
    std::optional<std::string> id;               // generated (UUIDv7) when absent
    std::optional<std::string> idempotency_key;  // a second event with this key is a duplicate
    std::optional<std::int64_t> ts;              // event time; defaults to `now`
};

struct NewRun {
    std::string workflow_id;
    std::string version;
    std::int64_t priority = 0;  // higher is claimed first among due items
    // For a child run started by Context::invoke: the parent run and its waiting step.
    std::optional<std::string> parent_run_id;
    std::optional<std::string> parent_step_key;
};

struct InsertedEvent {
    std::string event_id;
    std::vector<std::string> run_ids;
    bool duplicate =
        false;  // true when the id or idempotency key was seen before: nothing new written
};

struct EventRecord {
    std::string id;
    std::string name;
    std::string data;
    std::int64_t ts = 0;
    std::optional<std::string> idempotency_key;
    std::int64_t received_at = 0;
};

struct RunRecord {
    std::string id;
    std::string workflow_id;
    std::string version;
    std::string event_id;
    std::string event_name;
    std::string status;
    std::optional<std::string> output;  // JSON text
    std::optional<std::string> error;   // JSON text
    std::int64_t attempt = 0;
    std::int64_t created_at = 0;
    std::optional<std::int64_t> started_at;
    std::optional<std::int64_t> ended_at;
    std::optional<std::string> parent_run_id;
    std::optional<std::string> parent_step_key;
    std::optional<std::string> worker;     // the worker that last executed it
    std::optional<std::string> replay_of;  // the run this one replays
    std::int64_t updated_at = 0;
};

// One durable operation of a run: a step, sleep, wait, sent event or invoked child.
struct StepRecord {
    std::string run_id;
    std::string key;
    std::int64_t seq = 0;
    std::string status;  // completed, failed, retrying, sleeping, waiting
    std::optional<std::string> output;
    std::optional<std::string> error;
    std::int64_t attempts = 1;
    std::optional<std::int64_t> started_at;
    std::optional<std::int64_t> ended_at;
    std::string kind = "step";            // step, sleep, wait, send, invoke
    std::optional<std::int64_t> wake_at;  // retrying/sleeping/waiting: when to look again
};

// One execution attempt of a step, kept forever as the run's history.
struct AttemptRecord {
    std::string run_id;
    std::string step_key;
    std::int64_t attempt = 1;
    std::int64_t started_at = 0;
    std::int64_t ended_at = 0;
    std::string outcome;               // completed, failed, timed_out
    std::optional<std::string> error;  // JSON
    std::string logs = "[]";           // JSON array of lines logged during the attempt
    std::optional<std::string> worker;
    std::int64_t generation = 0;  // the run's retry generation (runs.attempt) at the time
};

struct WaitRecord {
    std::string run_id;
    std::string step_key;
    std::string event_name;
    std::string match_field;                 // path into the event, e.g. "data.id"
    std::optional<std::string> match_value;  // JSON of that field in the waiting run's event
    std::int64_t expires_at = 0;
    // An expression the event (`async`) must satisfy as well (engine/expression.hpp).
    std::optional<std::string> expression = std::nullopt;
};

// Everything a worker needs to replay a run.
struct RunState {
    RunRecord run;
    EventRecord event;
    std::vector<StepRecord> steps;  // in seq order
};

// A process that executes runs on the database, with the workflows it registered.
struct ProcessRecord {
    std::string id;    // its worker id
    std::string name;  // what it calls itself ("cairn", a service's name)
    std::int64_t started_at = 0;
    std::int64_t heartbeat_at = 0;
    std::optional<std::int64_t> stopped_at;  // set by a clean stop
    std::string workflows = "[]";            // JSON array of {id, version, triggers, options}
};

// A claim on one queue item. `epoch` is the fencing token: every claim of the item
// increments it, so a holder whose lease expired and was claimed again can no longer
// write anything for the run.
struct Lease {
    std::string run_id;
    std::string owner;
    std::int64_t epoch = 0;
    std::int64_t until = 0;
};

// A claimed run: its lease and, when it has no steps yet, everything an execution needs
// (so the worker does not load it).
struct Claim {
    Lease lease;
    std::optional<RunState> state;  // the run as claimed (status running), with no steps
};

// For RunStore::insert_event and insert_events: the runs are written claimed by `owner`
// until `until` (running, lease epoch 1), for a sender that runs them itself instead of
// queueing them for a claim; their claims, as claim_runs returns them, are appended to
// `claims`.
struct ClaimedBy {
    std::string owner;
    std::int64_t until = 0;
    std::vector<Claim> claims;
};

// An event for RunStore::insert_events, with the runs it starts (due at `now`).
struct EventWrite {
    const NewEvent* event = nullptr;
    std::span<const NewRun> runs;
    std::int64_t now = 0;
    // Set: the runs are written claimed (ClaimedBy), and a written event's claims added.
    ClaimedBy* claimed = nullptr;
    // Set by insert_events: whether it was written, and its id and its runs' ids if so.
    bool written = false;
    InsertedEvent inserted;
};

struct RunFilter {
    std::optional<std::string> workflow_id;
    std::optional<std::string> status;
    std::optional<std::string> event_name;
    std::optional<std::int64_t> created_from;  // inclusive
    std::optional<std::int64_t> created_to;    // exclusive
    std::optional<std::string> search;         // a run id or event id, or a prefix of one
};

struct RunPage {
    std::vector<RunRecord> runs;             // newest first
    std::optional<std::string> next_cursor;  // pass back to get the next page; absent on the last
};

// How a run ended, for RunWrite.
struct RunEnd {
    std::string status;  // completed or failed
    std::optional<std::string> output;
    std::optional<std::string> error;
    std::int64_t at = 0;
};

// One write for a leased run, for RunStore::write_runs: a step (with its attempt), the
// run's end, or both.
struct RunWrite {
    const Lease* lease = nullptr;
    const StepRecord* step = nullptr;        // null: no step to write
    const AttemptRecord* attempt = nullptr;  // null: no attempt to record
    const RunEnd* end = nullptr;             // null: the run goes on
    // Set by write_runs: whether the lease held (nothing is written otherwise), and the
    // run's status after the write (how a worker learns of a cancellation).
    bool held = false;
    std::string run_status;
};

}  // namespace cairn::storage
