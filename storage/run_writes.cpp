// Step records and run ends: what a worker writes for a run it holds the lease of.

#include "storage/detail/run_statements.hpp"
#include "storage/run_store.hpp"

namespace cairn::storage {

namespace detail {

std::int64_t changed_at(const StepRecord& step) {
    return step.ended_at.value_or(step.started_at.value_or(0));
}

std::int64_t recorded_at(const RunWrite& w) {
    if (w.step) return changed_at(*w.step);
    if (w.attempt) return w.attempt->ended_at;
    return 0;
}

std::int64_t touched_at(const RunWrite& w) {
    if (w.end) return w.end->at;
    return changed_at(*w.step);
}

bool attempt_in_step(const RunWrite& w) {
    return w.step != nullptr && w.attempt != nullptr && w.attempt->attempt == 1 &&
           w.attempt->outcome == "completed" && w.step->status == "completed" &&
           w.attempt->step_key == w.step->key;
}

}  // namespace detail

namespace {

void reset(std::span<RunWrite* const> writes) {
    for (RunWrite* w : writes) {
        w->held = false;
        w->run_status.clear();
    }
}

}  // namespace

void RunStore::write_runs(std::span<RunWrite* const> writes) {
    if (writes.empty()) return;
    if (!sql_->writes_alone()) {
        db_.transact([&](Transaction& tx) { write_runs(tx, writes); });
        return;
    }
    reset(writes);
    sql_->write_runs(
        [this](std::string_view sql, std::span<const Value> params) {
            return db_.exec_once(Access::read_write, sql, params);
        },
        writes);
}

void RunStore::write_runs(Transaction& tx, std::span<RunWrite* const> writes) {
    if (writes.empty()) return;
    reset(writes);
    sql_->write_runs(detail::in(tx), writes);
}

bool RunStore::record_step(const Lease& lease, const StepRecord& step) {
    return db_.transact([&](Transaction& tx) {
        if (!hold_fence(tx, lease)) return false;
        write_step(tx, step);
        return true;
    });
}

bool RunStore::finish_run(const Lease& lease, std::string_view status,
                          const std::optional<std::string>& output,
                          const std::optional<std::string>& error, std::int64_t now) {
    return db_.transact([&](Transaction& tx) {
        if (!hold_fence(tx, lease)) return false;
        finish_run(tx, lease, status, output, error, now);
        return true;
    });
}

void RunStore::write_step(Transaction& tx, const StepRecord& step) {
    // A completed step is final: a second write of the same key changes nothing.
    tx.exec(
        "INSERT INTO steps (run_id, step_key, seq, kind, status, output, error, attempts, "
        "started_at, ended_at, wake_at, changed_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) "
        "ON CONFLICT (run_id, step_key) DO UPDATE SET seq = excluded.seq, kind = excluded.kind, "
        "status = excluded.status, output = excluded.output, error = excluded.error, "
        "attempts = excluded.attempts, started_at = COALESCE(steps.started_at, "
        "excluded.started_at), ended_at = excluded.ended_at, wake_at = excluded.wake_at, "
        "changed_at = excluded.changed_at WHERE steps.status <> 'completed'",
        step.run_id, step.key, step.seq, step.kind, step.status, step.output, step.error,
        step.attempts, step.started_at, step.ended_at, step.wake_at, detail::changed_at(step));
}

void RunStore::write_attempt(Transaction& tx, const AttemptRecord& a) {
    tx.exec(
        "INSERT INTO step_attempts (run_id, step_key, generation, attempt, started_at, ended_at, "
        "outcome, error, logs, worker) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        a.run_id, a.step_key, a.generation, a.attempt, a.started_at, a.ended_at, a.outcome, a.error,
        a.logs, a.worker);
}

void RunStore::set_run_status(Transaction& tx, std::string_view run_id, std::string_view status,
                              std::int64_t now, const std::optional<std::string>& worker) {
    tx.exec(
        "UPDATE runs SET status = $2, updated_at = $3, started_at = COALESCE(started_at, $3), "
        "worker = COALESCE($4, worker) "
        "WHERE id = $1 AND status NOT IN ('completed', 'failed', 'cancelled')",
        run_id, status, now, worker);
}

bool RunStore::finish_run(Transaction& tx, const Lease& lease, std::string_view status,
                          const std::optional<std::string>& output,
                          const std::optional<std::string>& error, std::int64_t now) {
    auto r = tx.exec(
        "UPDATE runs SET status = $2, output = $3, error = $4, ended_at = $5, updated_at = $5 "
        "WHERE id = $1 AND status <> 'cancelled'",
        lease.run_id, status, output, error, now);
    tx.exec("DELETE FROM waits WHERE run_id = $1", lease.run_id);
    release(tx, lease, std::nullopt);
    return r.affected() == 1;
}

}  // namespace cairn::storage
