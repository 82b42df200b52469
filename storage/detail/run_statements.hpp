#pragma once

// Internal to storage/: the run store's statements where SQLite and Postgres differ, one
// implementation per backend (storage/sqlite/run_statements.cpp,
// storage/postgres/run_statements.cpp), chosen once by RunStore's constructor.

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "storage/database.hpp"
#include "storage/records.hpp"

namespace cairn::storage::detail {

// Runs one statement: in a transaction, or on its own.
using Exec = std::function<Result(std::string_view sql, std::span<const Value> params)>;
inline Exec in(Transaction& tx) {
    return [&tx](std::string_view sql, std::span<const Value> params) {
        return tx.exec_values(sql, params);
    };
}

class RunStatements {
  public:
    virtual ~RunStatements() = default;

    // Batches of events and of records are one statement that commits on its own.
    virtual bool writes_alone() const = 0;

    // Inserts a new event with id `event_id` and, only if it was inserted, its runs (ids
    // `run_ids`) and their queue items, due at `now` or written claimed (`claimed`).
    // False, having written nothing, when the event's id or key was seen before.
    virtual bool insert_event(Transaction& tx, const NewEvent& event, const std::string& event_id,
                              std::span<const NewRun> runs, std::span<const std::string> run_ids,
                              std::int64_t now, const ClaimedBy* claimed) = 0;

    // RunStore::insert_events: sets `written` and `inserted` of each event.
    virtual void insert_events(const Exec& exec, std::span<EventWrite* const> events) = 0;

    // A set of workflow ids as claim() takes it.
    virtual Value workflow_set(std::span<const std::string> ids) const = 0;

    // Takes up to `limit` due items for `owner` until `until` of the workflows in
    // `workflows` (workflow_set; NULL for any) and marks their runs running (unless
    // ended); returns each item's run id and new lease epoch. `exec` must hold the claim's
    // writes together (a transaction, or one statement).
    virtual std::vector<Lease> claim(const Exec& exec, std::string_view owner, int limit,
                                     std::int64_t now, std::int64_t until,
                                     const Value& workflows) = 0;

    // RunStore::write_runs in one transaction (or one statement when writes_alone()).
    virtual void write_runs(const Exec& exec, std::span<RunWrite* const> writes) = 0;

    // Wakes the queue's listeners in other processes at commit.
    virtual void notify(Transaction& tx) = 0;
};

std::unique_ptr<RunStatements> sqlite_run_statements();
std::unique_ptr<RunStatements> postgres_run_statements();

// The portable statements insert_event is made of: the event's row alone (false when its
// id or key was seen before), and its runs with their queue items one by one.
bool insert_event_row(Transaction& tx, const NewEvent& e, const std::string& event_id,
                      std::int64_t now);
void insert_run_rows(Transaction& tx, const std::string& event_id, std::span<const NewRun> runs,
                     std::span<const std::string> run_ids, std::int64_t now,
                     const ClaimedBy* claimed);

// What claim_runs would read back for a run written claimed at `now` (ClaimedBy).
Claim claimed_run(const NewEvent& e, const std::string& event_id, const NewRun& r,
                  const std::string& run_id, std::int64_t now, const std::string& owner,
                  std::int64_t until);
// Appends the claims of an inserted event's runs written claimed, if they were.
void add_claims(ClaimedBy* claimed, const NewEvent& event, const InsertedEvent& ins,
                std::span<const NewRun> runs, std::int64_t now);

// A step's change time (steps.changed_at, which the change feed follows).
std::int64_t changed_at(const StepRecord& step);
// When a write's step or attempt record was made: a cancelled run keeps only records made
// by its cancel (a step that was executing then leaves no result).
std::int64_t recorded_at(const RunWrite& w);
// The time of a record: its run's end, or its step's change.
std::int64_t touched_at(const RunWrite& w);
// Whether the write's attempt goes in its step's row: the first attempt, and it completed
// the step. Every other attempt is a row of step_attempts.
bool attempt_in_step(const RunWrite& w);

// Column lists of the steps and attempts tables, and the upsert that never changes a
// completed step.
inline constexpr std::string_view kStepColumnList =
    "run_id, step_key, seq, kind, status, output, error, attempts, started_at, ended_at, wake_at, "
    "changed_at, attempt_generation, attempt_worker, attempt_logs";
inline constexpr std::string_view kAttemptColumnList =
    "run_id, step_key, generation, attempt, started_at, ended_at, outcome, error, logs, worker";
inline constexpr std::string_view kStepUpsert =
    "ON CONFLICT (run_id, step_key) DO UPDATE SET seq = excluded.seq, kind = excluded.kind, "
    "status = excluded.status, output = excluded.output, error = excluded.error, "
    "attempts = excluded.attempts, started_at = COALESCE(steps.started_at, excluded.started_at), "
    "ended_at = excluded.ended_at, wake_at = excluded.wake_at, changed_at = excluded.changed_at, "
    "attempt_generation = excluded.attempt_generation, attempt_worker = excluded.attempt_worker, "
    "attempt_logs = excluded.attempt_logs "
    "WHERE steps.status <> 'completed'";

}  // namespace cairn::storage::detail
