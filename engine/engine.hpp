#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "cairn/context.hpp"
#include "cairn/event.hpp"
#include "cairn/workflow.hpp"
#include "common/histogram.hpp"
#include "engine/clock.hpp"
#include "storage/database.hpp"
#include "storage/flow_store.hpp"
#include "storage/run_store.hpp"

namespace cairn {
class Periodic;
}

namespace cairn::engine {

namespace detail {
struct Runtime;
class LeaseKeeper;
class Scheduler;
}  // namespace detail

using cairn::EventInput;
using cairn::SendResult;
using cairn::WorkerOptions;

// Stats of this process since start, for logs, tests and /metrics. Group commit's own
// counters are the database's (storage::WriteBatcher::stats).
struct EngineStats {
    std::int64_t executions = 0;   // claims executed
    std::int64_t steps_run = 0;    // step attempts executed
    std::int64_t leases_lost = 0;  // executions abandoned because another worker took over
    std::int64_t retries = 0;      // failed attempts scheduled to run again
    std::int64_t runs_ended = 0;   // runs its executions ended (completed, failed,
                                   // cancelled), each counted once the end committed
    // Step attempt durations by workflow id.
    std::map<std::string, Histogram::Snapshot> step_seconds;
};

// A workflow's settings as listings show them: {max_attempts, initial_delay_ms, ...}.
json workflow_options(const Workflow& w);

// A workflow's flow control as listings show it: each control set, with durations in ms,
// and "summary", one line ("concurrency 2 per event.data.k; throttle 10/60s"); null
// without any.
json flow_control_json(const FlowControl& flow);
// A workflow as the processes table stores it: {id, version, triggers, options}.
json workflow_description(const Workflow& w);

// The durable execution engine: the workflow registry, event intake, and the workers
// that claim runs and replay them.
//
// Thread-safe after registration: add() all workflows before send() or start();
// replace_workflows() may be called at any time.
class Engine {
  public:
    Engine(storage::Database& db, const Clock& clock);
    ~Engine();
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    // Registers a workflow. Throws std::invalid_argument for an empty or duplicate id.
    void add(Workflow workflow);
    // Replaces the workflows of `group` (an SDK app's functions) at any time, validated
    // as add() does, all or none: events start runs of the new set at once, and this
    // engine's claims take them. Returns the ids the group no longer has.
    std::vector<std::string> replace_workflows(const std::string& group, std::vector<Workflow> ws);
    const Workflow* find(std::string_view id) const;
    std::vector<const Workflow*> workflows() const;
    // The workflows of this engine and of every process in the processes table, by id:
    // each as workflow_description, with "local" (added to this engine) and "processes"
    // ([{id, name, heartbeat_at, stopped_at, live}], live when running and heard from in
    // the last 30 s), "paused", "paused_at" and "next_tick" (of its cron schedule, epoch
    // ms; null without one). A workflow known here is described as
    // here; another by its most recent process.
    json workflow_listing();

    // Writes the event, starts a run of every workflow it triggers, and resumes runs
    // waiting for it, in the caller's transaction `tx`: a domain write and its event
    // commit together or not at all (the outbox rule). Idle workers (this process's, and
    // on Postgres other processes' by a NOTIFY) are woken once `tx` commits. A repeated id
    // or idempotency key changes nothing and returns the first delivery's runs.
    SendResult send(storage::Transaction& tx, const EventInput& event);
    // Several events in `tx`, one result each: on Postgres the new events that no run
    // waits for go in one statement.
    std::vector<SendResult> send(storage::Transaction& tx, std::span<const EventInput> events);
    // The same on its own: sends made at once share a commit (on Postgres, one statement).
    // Not from inside a transaction's function: on SQLite it would wait for itself (use
    // send(tx, event) there).
    SendResult send(const EventInput& event);

    // Cancels a run: it stops at its next step boundary. False if it had already ended.
    bool cancel(std::string_view run_id);

    // Re-queues a failed or cancelled run, keeping its completed steps.
    storage::RunStore::RetryResult retry(std::string_view run_id);

    // Starts a new run of the run's workflow on the same event; with `from_step`, the
    // steps before it are copied and the rest run again; with `data`, on a new event of the
    // same name with that data. Returns the new run's id.
    std::variant<std::string, storage::RunStore::ReplayError> replay(
        std::string_view run_id, const std::optional<std::string>& from_step = std::nullopt,
        const std::optional<json>& data = std::nullopt);

    // cancel, retry or replay of every run matching a filter (control.cpp).
    enum class BulkOperation { cancel, retry, replay };
    struct BulkResult {
        std::int64_t matched = 0;       // runs that matched the filter when it was read
        std::vector<std::string> done;  // those cancelled or retried; for replay, the new runs
    };
    // The matching runs are read first (oldest first), so runs the operation itself creates
    // are not among them; a run the operation does not apply to (cancel of an ended run,
    // retry of one not failed or cancelled) is passed over. `progress(handled, matched)`
    // is called every 500 runs.
    BulkResult bulk(BulkOperation op, const storage::RunFilter& filter,
                    const std::function<void(std::int64_t, std::int64_t)>& progress = {});

    // Pauses a workflow on the database, or resumes it: this engine's claims leave it out
    // (or take it again) at once, every other process's within a second (each reads the
    // pauses every second). False when it already was (not) paused.
    bool pause(std::string_view workflow_id);
    bool resume(std::string_view workflow_id);

    // Deletes runs of `statuses` (completed, failed, cancelled) that ended before
    // `ended_before`, as the retention of start() does, in batches; `progress` is called
    // after each batch with the totals so far. Returns the totals.
    storage::RunStore::Collected collect(
        std::int64_t ended_before, std::span<const std::string> statuses,
        const std::function<void(const storage::RunStore::Collected&)>& progress = {});

    // Starts a run of each cron workflow whose latest tick at the clock's time has not
    // started one (start() does this every second); returns how many started. For tests
    // and tools.
    int fire_schedules();

    // Claims and executes due runs on the calling thread until none is due at the clock's
    // current time; returns how many executions ran. For tests and tools.
    int run_until_idle(int max_executions = 100'000);

    // Starts worker threads (and, on Postgres, a LISTEN connection for prompt wake-ups),
    // and lists this process with its workflows in the processes table, its heartbeat
    // moved every 10 s until stop(). Workers claim only runs of workflows added here, so
    // processes with different workflows may share a database.
    void start(WorkerOptions options);
    // Graceful stop: claims no more; each running execution yields at its next step
    // boundary and gives its run back (due now) so another worker takes it at once.
    void stop();

    // How long ended runs are kept (WorkerOptions::retention of start(); 0 when not
    // started or kept forever).
    std::chrono::milliseconds retention() const;

    EngineStats stats() const;
    // Waits until this process's executions have ended more than `seen` runs (the
    // count in stats().runs_ended) or `timeout` passes; returns the count. For drivers and
    // tests that wait for runs to finish without polling the database.
    std::int64_t await_runs_ended(std::int64_t seen, std::chrono::milliseconds timeout);
    // Flow control (docs/flow-control.md): why a queued run is held back, as
    // {reason, message, until} (until: epoch ms, for a throttle, debounce or batch), or
    // null when it is not; the runs an event started none of, [{workflow_id, reason, at}];
    // the queue's unfinished items by workflow and reason (for /metrics).
    json held_back(const storage::RunRecord& run);
    json skipped_starts(const std::string& event_id);
    // The same for several events at once: {event id: [...]} for those with any.
    json skipped_starts(std::span<const std::string> event_ids);
    std::vector<storage::QueueDepth> queue_depths();

    storage::RunStore& store();
    const Clock& clock() const;
    const std::string& worker_id() const;

    // Calls `fn` after each step record commits, on the executing thread; set before
    // start(). A test seam: `cairn` sets one that ends the process abruptly after N steps.
    void on_step_recorded(std::function<void()> fn);

  private:
    void claim_unpaused();
    // Reads the paused workflows; claims leave them out from then on.
    void refresh_pauses();
    void register_process(const std::string& name);
    void start_retention(std::chrono::milliseconds retention);

    std::unique_ptr<detail::Runtime> rt_;
    std::unique_ptr<detail::Scheduler> scheduler_;
    std::unique_ptr<detail::LeaseKeeper> keeper_;
    std::unique_ptr<Periodic> control_;  // pauses and cron schedules, every second
    std::unique_ptr<Periodic> heartbeat_;
    std::unique_ptr<Periodic> retention_;
};

}  // namespace cairn::engine
