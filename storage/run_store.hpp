#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "storage/database.hpp"
#include "storage/migrations.hpp"
#include "storage/records.hpp"

namespace cairn::storage {

namespace detail {
class RunStatements;
}

// The engine's component of the schema (events, runs, steps, queue, waits), for Migrator.
Component run_store_component();

// The engine's tables and the operations on them; docs/storage.md describes the schema
// and the lease protocol. The operations live in files by what they do: events.cpp (events
// and waits), queue.cpp (claims and leases), run_writes.cpp (step records and run ends),
// run_control.cpp (cancel, retry, replay), run_queries.cpp (reads for the API and the UI).
// Where the backends differ, the statements sit behind detail::RunStatements, one
// implementation in storage/sqlite/ and one in storage/postgres/.
//
// Times are epoch milliseconds passed in by the caller (`now`), so tests and the engine's
// injectable clock decide what time it is. Thread-safe: every call takes its own
// transaction from the Database unless it is given one.
class RunStore {
  public:
    explicit RunStore(Database& db);
    ~RunStore();
    RunStore(const RunStore&) = delete;
    RunStore& operator=(const RunStore&) = delete;

    // Whether batches of events and of records are written by one statement that commits
    // on its own (Postgres), rather than in a transaction (SQLite).
    bool writes_alone() const;

    // ---- events and waits (events.cpp) ---------------------------------------------------

    // Writes the event, one run per entry of `runs` and their queue items (due at `now`)
    // in `tx`, the caller's transaction: a domain row and its event commit together.
    // A duplicate (same event id or idempotency key) writes nothing and returns the
    // first event's id and runs with duplicate = true. Waking idle workers is the caller's
    // part, after the commit. With `claimed`, a new event's runs are written claimed
    // (ClaimedBy).
    InsertedEvent insert_event(Transaction& tx, const NewEvent& event, std::span<const NewRun> runs,
                               std::int64_t now, ClaimedBy* claimed = nullptr);
    // The same in a transaction of its own.
    InsertedEvent insert_event(const NewEvent& event, std::span<const NewRun> runs,
                               std::int64_t now);
    // Several new events with their runs and queue items in one statement (Postgres): one
    // round trip whatever their number. An event is written only if it is new (neither
    // its id nor its idempotency key seen before, nor given twice in `events`) and no run
    // waits for events of its name (resuming one is insert_event's caller's work); what
    // is not written (written = false) is the caller's to send with insert_event. On
    // SQLite none is written: insert_event costs no round trips there. The first form
    // commits on its own (writes_alone()), the second writes in `tx`.
    void insert_events(std::span<EventWrite* const> events);
    void insert_events(Transaction& tx, std::span<EventWrite* const> events);

    void add_wait(Transaction& tx, const WaitRecord& wait);
    // Waits on `event_name`, for the caller to match against the new event.
    std::vector<WaitRecord> waits_for(Transaction& tx, std::string_view event_name);
    // Completes a waiting step with `output` (or fails it with `error`, keeping its output)
    // and makes its run due now unless a worker holds it. False when the step was no longer
    // waiting (timed out, or another event got there first). Takes the run's queue row lock
    // first, in the same order as a worker, so the two never deadlock.
    bool complete_waiting_step(Transaction& tx, std::string_view run_id, std::string_view step_key,
                               const std::optional<std::string>& output,
                               const std::optional<std::string>& error, std::int64_t now);

    // The Postgres NOTIFY channel that notify() signals and workers listen on.
    static constexpr std::string_view kQueueChannel = "cairn_queue";
    // Wakes idle workers in other processes (Postgres NOTIFY at commit; no-op on SQLite).
    void notify(Transaction& tx);

    // ---- the queue: claims and leases (queue.cpp) ----------------------------------------

    // Limits this store's claims to runs of these workflows (and runs queued before queue
    // items named their workflow); until called, claims take any workflow's runs. A claim
    // in progress keeps the set it started with.
    void claim_only(std::span<const std::string> workflow_ids);
    // That set as the backend's statement parameter (NULL for any workflow).
    Value claim_set() const { return claim_workflows(); }

    // Claims up to `limit` due queue items for `owner` until now + lease_ms, oldest first
    // within the highest priority, marks their runs running and returns with each the
    // state of a run that has no steps yet. Concurrent claimers never receive the same
    // item. The first form commits on its own, the second in `tx`.
    std::vector<Claim> claim_runs(std::string_view owner, int limit, std::int64_t now,
                                  std::int64_t lease_ms);
    std::vector<Claim> claim_runs(Transaction& tx, std::string_view owner, int limit,
                                  std::int64_t now, std::int64_t lease_ms);
    // The same, the leases only.
    std::vector<Lease> claim(std::string_view owner, int limit, std::int64_t now,
                             std::int64_t lease_ms);

    // Extends a lease to now + lease_ms. False when the lease was lost (expired and
    // claimed again, or released): the caller must stop working on the run.
    bool renew(Lease& lease, std::int64_t now, std::int64_t lease_ms);

    // Gives the item back: due again at `next_due`, or parked (never due) when nullopt,
    // as for a finished run. False when the lease was lost.
    bool release(const Lease& lease, std::optional<std::int64_t> next_due);
    // The same in `tx`, whose caller holds the fence.
    void release(Transaction& tx, const Lease& lease, std::optional<std::int64_t> next_due);

    // Locks the run's queue item and checks `lease` is still current. Call first in a
    // transaction that writes for a leased run; when it returns false write nothing.
    bool hold_fence(Transaction& tx, const Lease& lease);

    // ---- step records and run ends (run_writes.cpp) --------------------------------------

    // Fences and writes the steps, attempts and ends of several leased runs, a statement
    // per table for all of them (on Postgres one statement in all); each run may appear
    // once. Needs no hold_fence beforehand. An end is finish_run's: a cancelled run keeps
    // its status, and the queue item is parked. The first form commits on its own (on
    // Postgres one statement, no BEGIN/COMMIT), the second writes in `tx`.
    void write_runs(std::span<RunWrite* const> writes);
    void write_runs(Transaction& tx, std::span<RunWrite* const> writes);

    // Records (or updates) a step result, only while `lease` is current. False, and
    // nothing written, when the lease was lost.
    bool record_step(const Lease& lease, const StepRecord& step);
    // Sets the run's final status, output and error and parks its queue item, only while
    // `lease` is current.
    bool finish_run(const Lease& lease, std::string_view status,
                    const std::optional<std::string>& output,
                    const std::optional<std::string>& error, std::int64_t now);

    // Building blocks of the engine's fenced transactions: each assumes the caller holds
    // the fence (hold_fence) in `tx`.
    //
    // Inserts or updates a step; a completed step is never changed.
    void write_step(Transaction& tx, const StepRecord& step);
    void write_attempt(Transaction& tx, const AttemptRecord& attempt);
    // Sets a non-final run's status (running, sleeping, waiting); started_at on first run.
    void set_run_status(Transaction& tx, std::string_view run_id, std::string_view status,
                        std::int64_t now, const std::optional<std::string>& worker = std::nullopt);
    // Final status; drops waits; parks the queue item. A cancelled run keeps its status
    // (then false).
    bool finish_run(Transaction& tx, const Lease& lease, std::string_view status,
                    const std::optional<std::string>& output,
                    const std::optional<std::string>& error, std::int64_t now);

    // ---- operating runs (run_control.cpp) ------------------------------------------------

    // Marks a run cancelled unless it already ended; drops its waits; parks its queue item
    // unless a worker holds it (that worker stops at its next step boundary). Its
    // unfinished invoked runs, and theirs, are cancelled with it; its parent's invoke
    // fails at once. False when the run does not exist or had already ended.
    bool cancel_run(std::string_view run_id, std::int64_t now);
    // The same in `tx`, recording `error` (JSON text) as the run's error when given.
    // Returns the runs it cancelled: this one first, then its descendants (none when the
    // run does not exist or had ended).
    std::vector<std::string> cancel_run(Transaction& tx, std::string_view run_id, std::int64_t now,
                                        const std::optional<std::string>& error);

    enum class RetryResult { ok, not_found, not_ended };
    // Re-queues a failed or cancelled run: completed steps are kept, the others run again
    // with a fresh retry budget; runs.attempt counts the retries.
    RetryResult retry_run(std::string_view run_id, std::int64_t now);

    enum class ReplayError { not_found, unknown_step };
    // Starts a new run (replay_of = run_id) of the same workflow on the same event, at
    // `version`. With `from_step`, the steps recorded before that step are copied, so the
    // new run resumes there. With `data` (JSON text), the new run's event is a new one of
    // the same name with that data (it starts no other run). Returns the new run's id.
    std::variant<std::string, ReplayError> replay_run(
        std::string_view run_id, std::string_view version,
        const std::optional<std::string>& from_step, std::int64_t now,
        const std::optional<std::string>& data = std::nullopt);

    // ---- reads (run_queries.cpp) ---------------------------------------------------------

    std::optional<RunState> load(std::string_view run_id);
    // The run's status as `tx` sees it (empty for an unknown run).
    std::string run_status(Transaction& tx, std::string_view run_id);
    std::optional<RunRecord> get_run(std::string_view run_id);
    std::optional<RunRecord> get_run(Transaction& tx, std::string_view run_id);
    std::vector<AttemptRecord> attempts(std::string_view run_id);
    std::optional<EventRecord> get_event(std::string_view event_id);
    std::optional<EventRecord> get_event(Transaction& tx, std::string_view event_id);
    std::vector<StepRecord> steps(std::string_view run_id);

    // Runs matching `filter`, newest first, `limit` (1..1000) per page. Keyset paging on the
    // time-ordered run id: a row is returned exactly once even while new runs arrive.
    RunPage list_runs(const RunFilter& filter, std::optional<std::string> cursor, int limit);

    // The ids of every run matching `filter`, oldest first, and how many match: what a
    // bulk operation acts on.
    std::vector<std::string> match_runs(const RunFilter& filter);
    std::int64_t count_runs(const RunFilter& filter);

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

    // Items due now or later that are not parked (the queue's depth).
    std::int64_t queue_depth();
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

    // ---- retention (retention.cpp) ----------------------------------------------------------

    // Runs in `statuses` (each completed, failed or cancelled; std::invalid_argument
    // otherwise) that ended before `ended_before`.
    std::int64_t count_collectable(std::int64_t ended_before,
                                   std::span<const std::string> statuses);
    struct Collected {
        std::int64_t runs = 0;
        std::int64_t events = 0;
    };
    // Deletes up to `limit` such runs, oldest first, with their steps, attempts, waits and
    // queue items, and the events that no run references any more, in one transaction;
    // when fewer than `limit` runs were left, then also up to `limit` events received
    // before `ended_before` that no run references. On Postgres, no runs when another
    // process is collecting at the same moment. Call again until it returns no runs and no
    // events.
    Collected collect(std::int64_t ended_before, std::span<const std::string> statuses, int limit);

    // ---- pauses and schedules (workflow_state.cpp) ------------------------------------------

    // Pauses a workflow: engines leave it out of what they claim (claim_only) until it is
    // resumed; events are still recorded and its runs queued. False when it was paused
    // already.
    bool pause_workflow(std::string_view workflow_id, std::int64_t now);
    // Resumes it and wakes other processes' workers (NOTIFY). False when it was not
    // paused.
    bool resume_workflow(std::string_view workflow_id);
    // Paused workflows with the time each was paused.
    std::map<std::string, std::int64_t> paused_workflows();

    // Registers a cron schedule: the last tick fired when the schedule is known with this
    // expression; otherwise records it with `last_tick` (nothing missed) and returns nullopt.
    std::optional<std::int64_t> schedule_start(std::string_view workflow_id, std::string_view cron,
                                               std::int64_t last_tick);
    // Moves the schedule's last fired tick forward to `tick`.
    void schedule_fired(std::string_view workflow_id, std::int64_t tick);

    // ---- processes (processes.cpp) ---------------------------------------------------------

    // Writes (or rewrites) the process's row, and deletes the rows of processes silent
    // since `forget_before`.
    void register_process(const ProcessRecord& process, std::int64_t forget_before);
    // Moves its heartbeat; false when its row is gone (then register again).
    bool heartbeat(std::string_view process_id, std::int64_t now);
    // A clean stop: the row stays (its workflows are still listed) until forgotten.
    void process_stopped(std::string_view process_id, std::int64_t now);
    // Every registered process, most recent heartbeat first.
    std::vector<ProcessRecord> processes();

  private:
    Database& db_;
    std::unique_ptr<detail::RunStatements> sql_;  // the backend's statements
    Value claim_workflows() const;
    mutable std::mutex claim_mu_;
    Value claim_workflows_;  // claim_only's set as the backend's parameter; NULL for any;
                             // guarded by claim_mu_
};

}  // namespace cairn::storage
