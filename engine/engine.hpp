#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "common/histogram.hpp"
#include "engine/clock.hpp"
#include "engine/context.hpp"
#include "engine/workflow.hpp"
#include "storage/database.hpp"
#include "storage/run_store.hpp"

namespace cairn::engine {

namespace detail {
class Execution;
}

// An event to send. `data` is any JSON value (an object by convention).
struct EventInput {
    std::string name;
    json data = json::object();
    std::optional<std::string> id;
    std::optional<std::string> idempotency_key;
    std::optional<std::int64_t> ts;
};

struct SendResult {
    std::string event_id;
    std::vector<std::string> run_ids;
    bool duplicate = false;
    int waits_resumed = 0;
};

struct WorkerOptions {
    int threads = 4;                          // runs executed at once
    std::chrono::milliseconds lease{30'000};  // renewed every lease/3 while running
    std::chrono::milliseconds poll{1'000};    // longest idle wait between queue checks
    std::string worker_id;                    // generated when empty: host:pid:random
};

// Stats of this process since start, for logs, tests and /metrics.
struct EngineStats {
    std::int64_t executions = 0;   // claims executed
    std::int64_t steps_run = 0;    // step attempts executed
    std::int64_t leases_lost = 0;  // executions abandoned because another worker took over
    std::int64_t retries = 0;      // failed attempts scheduled to run again
    std::int64_t runs_ended = 0;   // runs its executions ended (completed, failed,
                                   // cancelled), each counted once the end committed
    // Step attempt durations by workflow id.
    std::map<std::string, Histogram::Snapshot> step_seconds;
    std::int64_t group_commits = 0;   // transactions that carried writes of several runs
                                      // (or, on Postgres, several sends with riders)
    std::int64_t grouped_writes = 0;  // fenced writes those transactions carried
    // CPU time of the writer threads that commit the batches while workers run, counted
    // after each batch's commit (the wake-ups that follow count with the next batch): on
    // SQLite their one thread is the serial path of a drain.
    std::int64_t writer_cpu_ns = 0;
};

// What a send that answers later (Engine::send with `done`) reports, exactly one of:
// its result; the error it threw; or `rest`, the remainder of a send the shared statement
// could not take, which may block and is to be called on a thread that may (it returns or
// throws as the blocking send() does).
struct SendOutcome {
    std::optional<SendResult> result;
    std::exception_ptr error;
    std::function<SendResult()> rest;
};

// Engine::send's condition did not hold: nothing was written.
class PreconditionFailed : public std::runtime_error {
  public:
    PreconditionFailed() : std::runtime_error("the write's precondition did not hold") {}
};

// The durable execution engine: the workflow registry, event intake, and the workers
// that claim runs and replay them.
//
// Thread-safe after registration: add() all workflows before send() or start().
class Engine {
  public:
    Engine(storage::Database& db, const Clock& clock);
    ~Engine();
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    // Registers a workflow. Throws std::invalid_argument for an empty or duplicate id.
    void add(Workflow workflow);
    const Workflow* find(std::string_view id) const;
    std::vector<const Workflow*> workflows() const;

    // Writes the event, starts a run of every workflow it triggers, and resumes runs
    // waiting for it — all in one transaction (the caller's `tx`, for a domain write and
    // its event to commit together). A repeated id or idempotency key changes nothing.
    SendResult send(storage::Transaction& tx, const EventInput& event);
    // The same in a transaction of its own; on Postgres a plain new event that no run
    // waits for is written in one statement instead (one round trip, one commit).
    SendResult send(const EventInput& event);
    // The same, also inserting the rows `riders` returns given the event's and runs' ids
    // (for a duplicate, those of the first delivery): the rows and the event commit
    // together, in the one statement when it applies.
    using Riders = std::function<std::vector<storage::RowInsert>(const SendResult&)>;
    SendResult send(const EventInput& event, const Riders& riders);
    // The same, written only if `only_if` holds in the same transaction (on Postgres, in
    // the one statement when it applies); otherwise nothing is written and it throws
    // PreconditionFailed.
    SendResult send(const EventInput& event, const Riders& riders, const storage::OnlyIf& only_if);
    // The same without blocking the calling thread for the write: on Postgres a send that
    // shares a statement is queued and this returns at once; `done` gets the outcome
    // once, on the thread that wrote the statement, and must not block (what blocks goes
    // to SendOutcome::rest or to another thread). Any other send is not started here:
    // `done` is called before this returns, with the whole send as `rest`. `riders` and
    // `only_if` are kept, and called on the writing thread, until then.
    using SendDone = std::function<void(SendOutcome)>;
    void send(EventInput event, Riders riders, storage::OnlyIf only_if, SendDone done);

    // Wakes idle workers, this process's at once and other processes' by a NOTIFY sent
    // from a background thread; call it after send(tx, ...) committed.
    void wake();

    // Cancels a run: it stops at its next step boundary. False if it had already ended.
    bool cancel(std::string_view run_id);

    // Re-queues a failed or cancelled run, keeping its completed steps.
    storage::RunStore::RetryResult retry(std::string_view run_id);

    // Starts a new run of the run's workflow on the same event; with `from_step`, the
    // steps before it are copied and the rest run again. Returns the new run's id.
    std::variant<std::string, storage::RunStore::ReplayError> replay(
        std::string_view run_id, const std::optional<std::string>& from_step = std::nullopt);

    // Claims and executes due runs on the calling thread until none is due at the clock's
    // current time; returns how many executions ran. For tests and tools.
    int run_until_idle(int max_executions = 100'000);

    // Starts worker threads (and, on Postgres, a LISTEN connection for prompt wake-ups).
    void start(WorkerOptions options);
    // Graceful stop: claims no more; each running execution yields at its next step
    // boundary and gives its run back (due now) so another worker takes it at once.
    void stop();

    EngineStats stats() const;
    // Waits until this process's executions have ended more than `seen` runs (the
    // count in stats().runs_ended) or `timeout` passes; returns the count. For drivers and
    // tests that wait for runs to finish without polling the database.
    std::int64_t await_runs_ended(std::int64_t seen, std::chrono::milliseconds timeout);
    storage::RunStore& store();
    const Clock& clock() const;
    const std::string& worker_id() const;

    // Group commit (on by default): concurrent executions' writes share transactions.
    // Off, every write is a transaction of its own — for measuring what batching buys (on
    // SQLite the storage layer's group commit still lets those transactions share commits).
    void set_group_commit(bool on);

    // Debug knob for crash tests: when set (> 0), the process exits abruptly (as if
    // killed) right after recording this many steps in total. Read from CAIRN_CRASH_AFTER_STEPS.
    void set_crash_after_steps(std::int64_t n);

  private:
    friend class detail::Execution;
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace cairn::engine
