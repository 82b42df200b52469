// Operating runs: cancel, retry and replay, as the API, the CLI and the inspector ask.

#include "common/ids.hpp"
#include "storage/run_store.hpp"

namespace cairn::storage {

namespace {

// What an invoke whose child was cancelled records, as the engine's own cancellation does.
constexpr std::string_view kChildCancelled =
    R"({"type":"cancelled","message":"the invoked run was cancelled"})";

// Ends a run as cancelled unless it had ended; true if it had not. A run that a worker
// holds stops at its next step boundary; any other is parked at once.
bool cancel_one(Transaction& tx, std::string_view run_id, std::int64_t now) {
    auto r = tx.exec(
        "UPDATE runs SET status = 'cancelled', ended_at = $2, updated_at = $2 "
        "WHERE id = $1 AND status NOT IN ('completed', 'failed', 'cancelled')",
        run_id, now);
    if (r.affected() != 1) return false;
    tx.exec("DELETE FROM waits WHERE run_id = $1", run_id);
    tx.exec("UPDATE queue SET due_at = NULL WHERE run_id = $1 AND lease_owner IS NULL", run_id);
    return true;
}

}  // namespace

bool RunStore::cancel_run(std::string_view run_id, std::int64_t now) {
    return db_.transact(
        [&](Transaction& tx) { return !cancel_run(tx, run_id, now, std::nullopt).empty(); });
}

std::vector<std::string> RunStore::cancel_run(Transaction& tx, std::string_view run_id,
                                              std::int64_t now,
                                              const std::optional<std::string>& error) {
    std::vector<std::string> cancelled;
    if (!cancel_one(tx, run_id, now)) return cancelled;
    cancelled.emplace_back(run_id);
    if (error) tx.exec("UPDATE runs SET error = $2 WHERE id = $1", run_id, *error);
    // Its invoked runs, and theirs: nothing is left waiting for a cancelled run.
    auto descendants = tx.exec(
        "WITH RECURSIVE d (id) AS (SELECT id FROM runs WHERE parent_run_id = $1 "
        "UNION SELECT r.id FROM runs r JOIN d ON r.parent_run_id = d.id) SELECT id FROM d",
        run_id);
    for (auto row : descendants) {
        std::string id = row.get<std::string>(0);
        if (cancel_one(tx, id, now)) cancelled.push_back(std::move(id));
    }
    // Its parent's invoke fails now, whatever state this run was in (a worker holding
    // it would tell the parent only at its next boundary; one that never runs again,
    // never).
    auto parent = tx.exec("SELECT parent_run_id, parent_step_key FROM runs WHERE id = $1", run_id);
    const auto parent_id = parent.front().get_opt<std::string>(0);
    const auto parent_key = parent.front().get_opt<std::string>(1);
    if (parent_id && parent_key)
        complete_waiting_step(tx, *parent_id, *parent_key, std::nullopt,
                              std::string(kChildCancelled), now);
    notify(tx);
    return cancelled;
}

RunStore::RetryResult RunStore::retry_run(std::string_view run_id, std::int64_t now) {
    return db_.transact([&](Transaction& tx) {
        auto r = tx.exec(
            "UPDATE runs SET status = 'queued', output = NULL, error = NULL, ended_at = NULL, "
            "attempt = attempt + 1, updated_at = $2 WHERE id = $1 AND status IN ('failed', "
            "'cancelled')",
            run_id, now);
        if (r.affected() != 1) {
            return tx.exec("SELECT 1 FROM runs WHERE id = $1", run_id).empty()
                       ? RetryResult::not_found
                       : RetryResult::not_ended;
        }
        // Completed steps stay; the rest run again with a fresh retry budget (the attempt
        // history keeps the old ones under the previous generation).
        tx.exec("DELETE FROM steps WHERE run_id = $1 AND status <> 'completed'", run_id);
        tx.exec("DELETE FROM waits WHERE run_id = $1", run_id);
        tx.exec(
            "UPDATE queue SET due_at = $2, lease_owner = NULL, lease_until = NULL WHERE run_id = "
            "$1",
            run_id, now);
        notify(tx);
        return RetryResult::ok;
    });
}

std::variant<std::string, RunStore::ReplayError> RunStore::replay_run(
    std::string_view run_id, std::string_view version, const std::optional<std::string>& from_step,
    std::int64_t now, const std::optional<std::string>& data) {
    return db_.transact([&](Transaction& tx) -> std::variant<std::string, ReplayError> {
        auto src = tx.exec(
            "SELECT r.workflow_id, r.event_id, e.name FROM runs r JOIN events e ON e.id = "
            "r.event_id WHERE r.id = $1",
            run_id);
        if (src.empty()) return ReplayError::not_found;
        std::string event_id = src.front().get<std::string>(1);
        std::int64_t until_seq = 0;
        if (from_step) {
            auto step = tx.exec("SELECT seq FROM steps WHERE run_id = $1 AND step_key = $2", run_id,
                                *from_step);
            if (step.empty()) return ReplayError::unknown_step;
            until_seq = step.front().get<std::int64_t>(0);
        }
        if (data) {
            // Edited data: an event of the same name that starts nothing else.
            event_id = new_id_at(now);
            tx.exec(
                "INSERT INTO events (id, name, data, ts, idempotency_key, received_at) "
                "VALUES ($1, $2, $3, $4, NULL, $4)",
                event_id, src.front().get<std::string>(2), *data, now);
        }
        std::string new_id = new_id_at(now);
        tx.exec(
            "INSERT INTO runs (id, workflow_id, version, event_id, status, attempt, created_at, "
            "updated_at, "
            "replay_of) VALUES ($1, $2, $3, $4, 'queued', 0, $5, $5, $6)",
            new_id, src.front().get<std::string>(0), version, event_id, now, run_id);
        tx.exec("INSERT INTO queue (run_id, due_at, priority, workflow_id) VALUES ($1, $2, 0, $3)",
                new_id, now, src.front().get<std::string>(0));
        if (from_step) {
            tx.exec(
                "INSERT INTO steps (run_id, step_key, seq, kind, status, output, error, attempts, "
                "started_at, "
                "ended_at, wake_at) SELECT $1, step_key, seq, kind, status, output, error, "
                "attempts, "
                "started_at, ended_at, wake_at FROM steps WHERE run_id = $2 AND seq < $3",
                new_id, run_id, until_seq);
        }
        notify(tx);
        return new_id;
    });
}

}  // namespace cairn::storage
