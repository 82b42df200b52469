#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include "storage/database.hpp"
#include "storage/migrations.hpp"

namespace cairn::storage {

// The engine's tables (events, runs, steps, queue, waits) and the operations on them.
// docs/storage.md describes the schema and the lease protocol.
//
// Times are epoch milliseconds passed in by the caller (`now`), so tests and the engine's
// injectable clock decide what time it is. Thread-safe: every call takes its own
// transaction from the Database unless it is given one.

// The engine component's migrations, for Migrator.
Component run_store_component();

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

// A row inserted in the same commit as an event (Engine::send with riders): a domain row
// that exists exactly when its event does, such as a ticket and the event that starts its
// workflow. Table and column names are the caller's constants, never input.
struct RowInsert {
    std::string table;
    std::vector<std::pair<std::string, Value>> columns;  // name, value
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
};

// Everything a worker needs to replay a run.
struct RunState {
    RunRecord run;
    EventRecord event;
    std::vector<StepRecord> steps;  // in seq order
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
    // Set: the runs are written claimed (ClaimedBy; its claims are set for a written one).
    std::optional<ClaimedBy> claimed;
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

class RunStore {
  public:
    explicit RunStore(Database& db);

    // Writes the event, one run per entry of `runs` and their queue items (due at `now`)
    // in `tx`, the caller's transaction: a domain row and its event commit together.
    // A duplicate (same event id or idempotency key) writes nothing and returns the
    // first event's id and runs with duplicate = true. Waking idle workers in other
    // processes is the caller's part, after the commit (Engine does it with a Notifier on
    // kQueueChannel).
    // With `claimed`, a new event's runs are written claimed (ClaimedBy).
    InsertedEvent insert_event(Transaction& tx, const NewEvent& event, std::span<const NewRun> runs,
                               std::int64_t now, ClaimedBy* claimed = nullptr);
    // The same in a transaction of its own.
    InsertedEvent insert_event(const NewEvent& event, std::span<const NewRun> runs,
                               std::int64_t now);
    // Postgres only: the event, its runs, their queue items and the rows `riders` returns
    // (given the ids they will have) in one statement on its own: one round trip and one
    // commit instead of a transaction's five or more. It writes nothing and returns nullopt
    // unless the event is a plain new one — no run waits for events of its name (resuming
    // one is the transactional path's work: insert_event, waits_for), neither its id nor
    // its idempotency key was seen before, and `runs` is not empty; the caller then takes
    // the transactional path. SQLite always returns nullopt. With `only_if`, it also
    // writes nothing (and returns nullopt) unless the condition holds. With `claimed`, the
    // runs are written claimed (ClaimedBy).
    using Riders = std::function<std::vector<RowInsert>(const InsertedEvent&)>;
    std::optional<InsertedEvent> insert_event_alone(const NewEvent& event,
                                                    std::span<const NewRun> runs, std::int64_t now,
                                                    const Riders& riders,
                                                    const OnlyIf& only_if = {},
                                                    ClaimedBy* claimed = nullptr);
    // One write for insert_events_alone: insert_event_alone's arguments, and its result.
    struct AloneWrite {
        const NewEvent* event = nullptr;
        std::span<const NewRun> runs;
        std::int64_t now = 0;
        const Riders* riders = nullptr;         // null: none
        const OnlyIf* only_if = nullptr;        // null: unconditional
        ClaimedBy* claimed = nullptr;           // null: the runs are queued
        std::optional<InsertedEvent> inserted;  // set when written
    };
    // Several insert_event_alone writes in one statement and one commit (on Postgres;
    // SQLite writes none): each is written or not exactly as it would be alone. Sends made
    // at once share it (Engine::send), as plain events share insert_events'. A write given
    // an id or idempotency key another in the same call has is not for this: that is the
    // caller's to keep apart. A failure of the statement writes none of them.
    void insert_events_alone(std::span<AloneWrite* const> writes);
    // Postgres only: several events, their runs and queue items in one statement on its
    // own, however many (one round trip and one commit; Engine::send batches concurrent
    // sends this way). Each event is written only if insert_event_alone would write it
    // (its runs may be none), and only once: of two events in `events` with the same id or
    // idempotency key, the second is not written. What is not written (written = false)
    // is the caller's to send on the transactional path.
    void insert_events(std::span<EventWrite* const> events);
    // Inserts `rows` in `tx`.
    static void insert_rows(Transaction& tx, std::span<const RowInsert> rows);
    // Whether `only_if`'s query yields a row in `tx`.
    static bool holds(Transaction& tx, const OnlyIf& only_if);

    // Claims up to `limit` due queue items for `owner` until now + lease_ms, oldest first
    // within the highest priority. Concurrent claimers never receive the same item.
    std::vector<Lease> claim(std::string_view owner, int limit, std::int64_t now,
                             std::int64_t lease_ms);
    // The same, also marking the runs running and returning the state of each that has
    // no steps yet.
    std::vector<Claim> claim_runs(std::string_view owner, int limit, std::int64_t now,
                                  std::int64_t lease_ms);
    // The same inside `tx`, committed with it (on SQLite the engine commits its claims
    // with the step records it writes: one commit instead of two).
    static std::vector<Claim> claim_runs(Transaction& tx, std::string_view owner, int limit,
                                         std::int64_t now, std::int64_t lease_ms);

    // Extends a lease to now + lease_ms. False when the lease was lost (expired and
    // claimed again, or released): the caller must stop working on the run.
    bool renew(Lease& lease, std::int64_t now, std::int64_t lease_ms);

    // Gives the item back: due again at `next_due`, or parked (never due) when nullopt,
    // as for a finished run. False when the lease was lost.
    bool release(const Lease& lease, std::optional<std::int64_t> next_due);

    // Locks the run's queue item and checks `lease` is still current. Call first in a
    // transaction that writes for a leased run; when it returns false write nothing.
    bool hold_fence(Transaction& tx, const Lease& lease);

    // Records (or updates) a step result, only while `lease` is current. False, and
    // nothing written, when the lease was lost.
    bool record_step(const Lease& lease, const StepRecord& step);

    // Sets the run's final status, output and error and parks its queue item, only while
    // `lease` is current.
    bool finish_run(const Lease& lease, std::string_view status,
                    const std::optional<std::string>& output,
                    const std::optional<std::string>& error, std::int64_t now);

    // ---- building blocks for the engine's fenced transactions ----------------------------
    // Each assumes the caller already holds the fence (hold_fence) in `tx`.

    // Inserts or updates a step; a completed step is never changed.
    void write_step(Transaction& tx, const StepRecord& step);
    void write_attempt(Transaction& tx, const AttemptRecord& attempt);
    // Fences and writes the steps, attempts and ends of several leased runs, a statement
    // per table for all of them (on Postgres one statement in all); each run may appear
    // once. Needs no hold_fence beforehand. An end is finish_run's: a cancelled run keeps
    // its status, and the queue item is parked.
    void write_runs(Transaction& tx, std::span<RunWrite* const> writes);
    // The same, committed on its own (on Postgres one statement, no BEGIN/COMMIT).
    void write_runs(std::span<RunWrite* const> writes);
    // Sets a non-final run's status (running, sleeping, waiting); started_at on first run.
    void set_run_status(Transaction& tx, std::string_view run_id, std::string_view status,
                        std::int64_t now, const std::optional<std::string>& worker = std::nullopt);
    // Final status; drops waits; parks the queue item. A cancelled run keeps its status.
    void finish_run(Transaction& tx, const Lease& lease, std::string_view status,
                    const std::optional<std::string>& output,
                    const std::optional<std::string>& error, std::int64_t now);
    // Gives the queue item back, due at `next_due` (nullopt: parked).
    void release(Transaction& tx, const Lease& lease, std::optional<std::int64_t> next_due);

    // ---- waits and wake-ups ---------------------------------------------------------------

    void add_wait(Transaction& tx, const WaitRecord& wait);
    // Waits on `event_name`, for the caller to match against the new event.
    std::vector<WaitRecord> waits_for(Transaction& tx, std::string_view event_name);
    // Completes a waiting step with `output` (or fails it with `error`) and makes its run
    // due now unless a worker holds it. False when the step was no longer waiting (timed
    // out, or another event got there first). Takes the run's queue row lock first, in the
    // same order as a worker, so the two never deadlock.
    bool complete_waiting_step(Transaction& tx, std::string_view run_id, std::string_view step_key,
                               const std::optional<std::string>& output,
                               const std::optional<std::string>& error, std::int64_t now);
    // Marks a run cancelled unless it already ended; drops its waits; parks its queue item
    // unless a worker holds it (that worker stops at its next step boundary). False when
    // the run does not exist or had already ended.
    bool cancel_run(std::string_view run_id, std::int64_t now);

    // ---- reads ----------------------------------------------------------------------------

    std::optional<RunState> load(std::string_view run_id);
    std::optional<RunRecord> get_run(std::string_view run_id);
    std::vector<AttemptRecord> attempts(std::string_view run_id);
    std::optional<EventRecord> get_event(std::string_view event_id);
    std::vector<StepRecord> steps(std::string_view run_id);

    // Runs matching `filter`, newest first, `limit` (1..1000) per page. Keyset paging on the
    // time-ordered run id: a row is returned exactly once even while new runs arrive.
    RunPage list_runs(const RunFilter& filter, std::optional<std::string> cursor, int limit);

    // Items due now or later that are not parked (the queue's depth).
    std::int64_t queue_depth();

    // ---- operating runs -------------------------------------------------------------------

    enum class RetryResult { ok, not_found, not_ended };
    // Re-queues a failed or cancelled run: completed steps are kept, the others run again
    // with a fresh retry budget; runs.attempt counts the retries.
    RetryResult retry_run(std::string_view run_id, std::int64_t now);

    enum class ReplayError { not_found, unknown_step };
    // Starts a new run (replay_of = run_id) of the same workflow on the same event, at
    // `version`. With `from_step`, the steps recorded before that step are copied, so the
    // new run resumes there. Returns the new run's id.
    std::variant<std::string, ReplayError> replay_run(std::string_view run_id,
                                                      std::string_view version,
                                                      const std::optional<std::string>& from_step,
                                                      std::int64_t now);

    // Runs changed after the position (updated_at, id), in that order: the change feed.
    // An `after_id` of "~" (above every id) means "after everything at after_ms".
    std::vector<RunRecord> changes_since(std::int64_t after_ms, std::string_view after_id,
                                         int limit);

    struct Count {
        std::string workflow_id;
        std::string status;
        std::int64_t runs = 0;
    };
    std::vector<Count> counts_by_workflow_and_status(
        std::optional<std::int64_t> created_from = std::nullopt);

    struct QueueStats {
        std::int64_t pending = 0;  // not parked
        std::int64_t due = 0;      // due now and not leased
        std::optional<std::int64_t> oldest_due_age_ms;
    };
    QueueStats queue_stats(std::int64_t now);

    struct EventWithRuns {
        EventRecord event;
        std::vector<std::string> run_ids;
    };
    struct EventPage {
        std::vector<EventWithRuns> events;  // newest first
        std::optional<std::string> next_cursor;
    };
    EventPage list_events(const std::optional<std::string>& name, std::optional<std::string> cursor,
                          int limit);

    struct Finished {
        std::string workflow_id;
        std::string status;
        std::int64_t created_at = 0;
        std::optional<std::int64_t> duration_ms;  // ended - started, for runs that ran
    };
    // Runs created at or after `created_from`, for per-workflow statistics.
    std::vector<Finished> runs_since(std::int64_t created_from);

    // The Postgres NOTIFY channel that notify() signals and workers listen on.
    static constexpr std::string_view kQueueChannel = "cairn_queue";
    // Wakes idle workers in other processes (Postgres NOTIFY at commit; no-op on SQLite).
    static void notify(Transaction& tx);

  private:
    // The batch form of insert_events_alone (one statement of one text however many
    // writes); false, writing nothing, when it does not fit them: conditions of different
    // texts, an argument of values of two kinds, a rider's column that is not a plain
    // column of its table or holds arrays.
    bool insert_events_alone_rows(std::span<AloneWrite* const> writes);
    // The type of each column of `table` (format_type), read once.
    std::shared_ptr<const std::unordered_map<std::string, std::string>> column_types(
        const std::string& table);

    Database& db_;
    struct ColumnTypes;
    std::shared_ptr<ColumnTypes> types_;
};

}  // namespace cairn::storage
