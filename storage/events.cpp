// Events and what they start: the event row, its runs and their queue items, and the
// waits that an event may complete.

#include <stdexcept>

#include "common/ids.hpp"
#include "storage/detail/run_statements.hpp"
#include "storage/run_store.hpp"

namespace cairn::storage {

namespace detail {

Claim claimed_run(const NewEvent& e, const std::string& event_id, const NewRun& r,
                  const std::string& run_id, std::int64_t now, const std::string& owner,
                  std::int64_t until) {
    RunState state;
    state.run.id = run_id;
    state.run.workflow_id = r.workflow_id;
    state.run.version = r.version;
    state.run.event_id = event_id;
    state.run.event_name = e.name;
    state.run.status = std::string(run_status::kRunning);
    state.run.created_at = state.run.updated_at = now;
    state.run.started_at = now;
    state.run.parent_run_id = r.parent_run_id;
    state.run.parent_step_key = r.parent_step_key;
    state.run.worker = owner;
    state.event = EventRecord{event_id, e.name, e.data, e.ts.value_or(now), e.idempotency_key, now};
    return Claim{Lease{run_id, owner, 1, until}, std::move(state)};
}

void add_claims(ClaimedBy* claimed, const NewEvent& event, const InsertedEvent& ins,
                std::span<const NewRun> runs, std::int64_t now) {
    if (claimed == nullptr) return;
    for (std::size_t i = 0; i < runs.size(); ++i) {
        claimed->claims.push_back(claimed_run(event, ins.event_id, runs[i], ins.run_ids[i], now,
                                              claimed->owner, claimed->until));
    }
}

bool insert_event_row(Transaction& tx, const NewEvent& e, const std::string& event_id,
                      std::int64_t now) {
    return !tx.exec(
                  "INSERT INTO events (id, name, data, ts, idempotency_key, received_at) "
                  "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING id",
                  event_id, e.name, e.data, e.ts.value_or(now), e.idempotency_key, now)
                .empty();
}

void insert_run_rows(Transaction& tx, const std::string& event_id, std::span<const NewRun> runs,
                     std::span<const std::string> run_ids, std::int64_t now,
                     const ClaimedBy* claimed) {
    for (std::size_t i = 0; i < runs.size(); ++i) {
        const NewRun& run = runs[i];
        if (claimed == nullptr) {
            tx.exec(
                "INSERT INTO runs (id, workflow_id, version, event_id, status, attempt, "
                "created_at, updated_at, parent_run_id, parent_step_key) "
                "VALUES ($1, $2, $3, $4, 'queued', 0, $5, $5, $6, $7)",
                run_ids[i], run.workflow_id, run.version, event_id, now, run.parent_run_id,
                run.parent_step_key);
            tx.exec(
                "INSERT INTO queue (run_id, due_at, priority, workflow_id) VALUES ($1, $2, $3, $4)",
                run_ids[i], now, run.priority, run.workflow_id);
        } else {
            // As a claim leaves it: running, its item leased (epoch 1).
            tx.exec(
                "INSERT INTO runs (id, workflow_id, version, event_id, status, attempt, "
                "created_at, updated_at, started_at, worker, parent_run_id, parent_step_key) "
                "VALUES ($1, $2, $3, $4, 'running', 0, $5, $5, $5, $6, $7, $8)",
                run_ids[i], run.workflow_id, run.version, event_id, now, claimed->owner,
                run.parent_run_id, run.parent_step_key);
            tx.exec(
                "INSERT INTO queue (run_id, due_at, priority, lease_owner, lease_until, "
                "lease_epoch, workflow_id) VALUES ($1, $2, $3, $4, $2, 1, $5)",
                run_ids[i], claimed->until, run.priority, claimed->owner, run.workflow_id);
        }
    }
}

}  // namespace detail

InsertedEvent RunStore::insert_event(Transaction& tx, const NewEvent& event,
                                     std::span<const NewRun> runs, std::int64_t now,
                                     ClaimedBy* claimed) {
    if (event.name.empty()) throw std::invalid_argument("event name must not be empty");
    InsertedEvent out;
    out.event_id = event.id.value_or(new_id_at(now));
    std::vector<std::string> run_ids;
    for (std::size_t i = 0; i < runs.size(); ++i) run_ids.push_back(new_id_at(now));
    if (sql_->insert_event(tx, event, out.event_id, runs, run_ids, now, claimed)) {
        out.run_ids = std::move(run_ids);
        detail::add_claims(claimed, event, out, runs, now);
        return out;
    }
    // Seen before: report what the first delivery started and write nothing.
    auto first =
        tx.exec("SELECT id FROM events WHERE id = $1 OR idempotency_key = $2 ORDER BY id LIMIT 1",
                out.event_id, event.idempotency_key);
    if (first.empty()) {
        throw StorageError(to_string(tx.backend()),
                           "event insert conflicted but no earlier event was found");
    }
    out.event_id = first.front().get<std::string>(0);
    out.duplicate = true;
    for (auto row : tx.exec("SELECT id FROM runs WHERE event_id = $1 ORDER BY id", out.event_id))
        out.run_ids.push_back(row.get<std::string>(0));
    return out;
}

InsertedEvent RunStore::insert_event(const NewEvent& event, std::span<const NewRun> runs,
                                     std::int64_t now) {
    return db_.transact([&](Transaction& tx) { return insert_event(tx, event, runs, now); });
}

namespace {

void check_names(std::span<EventWrite* const> events) {
    for (const EventWrite* w : events) {
        if (w->event->name.empty()) throw std::invalid_argument("event name must not be empty");
    }
}

}  // namespace

void RunStore::insert_events(std::span<EventWrite* const> events) {
    check_names(events);
    if (events.empty()) return;
    if (!sql_->writes_alone()) {
        db_.transact([&](Transaction& tx) { insert_events(tx, events); });
        return;
    }
    sql_->insert_events(
        [this](std::string_view sql, std::span<const Value> params) {
            return db_.exec_once(Access::read_write, sql, params);
        },
        events);
}

void RunStore::insert_events(Transaction& tx, std::span<EventWrite* const> events) {
    check_names(events);
    if (!events.empty()) sql_->insert_events(detail::in(tx), events);
}

void RunStore::add_wait(Transaction& tx, const WaitRecord& w) {
    tx.exec(
        "INSERT INTO waits (run_id, step_key, event_name, match_field, match_value, expires_at, "
        "expression) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (run_id, step_key) DO NOTHING",
        w.run_id, w.step_key, w.event_name, w.match_field, w.match_value, w.expires_at,
        w.expression);
}

std::vector<WaitRecord> RunStore::waits_for(Transaction& tx, std::string_view event_name) {
    std::vector<WaitRecord> out;
    for (auto row :
         tx.exec("SELECT run_id, step_key, event_name, match_field, match_value, expires_at, "
                 "expression FROM waits WHERE event_name = $1 ORDER BY run_id, step_key",
                 event_name)) {
        out.push_back(WaitRecord{row.get<std::string>(0), row.get<std::string>(1),
                                 row.get<std::string>(2), row.get<std::string>(3),
                                 row.get_opt<std::string>(4), row.get<std::int64_t>(5),
                                 row.get_opt<std::string>(6)});
    }
    return out;
}

bool RunStore::complete_waiting_step(Transaction& tx, std::string_view run_id,
                                     std::string_view step_key,
                                     const std::optional<std::string>& output,
                                     const std::optional<std::string>& error, std::int64_t now) {
    // Queue row first (as workers lock it first): make the run due now unless a worker holds
    // it or it has ended; a worker holding it re-reads the step before it suspends again.
    tx.exec(
        "UPDATE queue SET due_at = CASE WHEN due_at > $2 THEN $2 ELSE due_at END "
        "WHERE run_id = $1 AND lease_owner IS NULL AND due_at IS NOT NULL",
        run_id, now);
    tx.exec("DELETE FROM waits WHERE run_id = $1 AND step_key = $2", run_id, step_key);
    // A failure keeps what the waiting step recorded (an invoke's child run id).
    auto r = tx.exec(
        "UPDATE steps SET status = $3, output = CASE WHEN CAST($5 AS TEXT) IS NULL THEN $4 ELSE "
        "output END, error = $5, ended_at = $6, changed_at = $6, wake_at = NULL "
        "WHERE run_id = $1 AND step_key = $2 AND status = 'waiting'",
        run_id, step_key, error ? "failed" : "completed", output, error, now);
    return r.affected() == 1;
}

void RunStore::notify(Transaction& tx) {
    sql_->notify(tx);
}

}  // namespace cairn::storage
