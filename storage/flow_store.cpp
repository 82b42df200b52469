// Flow control's tables: runs started through admission, key state, batches and skipped
// starts. The release of slots is the queue's triggers' (engine migrations 12 and 13).

#include "storage/flow_store.hpp"

#include <fmt/format.h>

#include "common/ids.hpp"
#include "storage/detail/run_rows.hpp"

namespace cairn::storage {

namespace {

// The statement's filter on `workflows` ($n): NULL takes every workflow.
std::string workflow_filter(Backend backend, int n) {
    if (backend == Backend::postgres)
        return fmt::format(
            "(CAST(${0} AS TEXT[]) IS NULL OR q.workflow_id = ANY (CAST(${0} AS TEXT[])))", n);
    return fmt::format("(${0} IS NULL OR q.workflow_id IN (SELECT value FROM json_each(${0})))", n);
}

}  // namespace

std::string FlowStore::add_run(Transaction& tx, const std::string& event_id, const FlowRun& f,
                               std::int64_t now) {
    const std::string id = new_id_at(now);
    tx.exec(
        "INSERT INTO runs (id, workflow_id, version, event_id, status, attempt, created_at, "
        "updated_at, parent_run_id, parent_step_key) "
        "VALUES ($1, $2, $3, $4, 'queued', 0, $5, $5, $6, $7)",
        id, f.run.workflow_id, f.run.version, event_id, now, f.run.parent_run_id,
        f.run.parent_step_key);
    const std::optional<std::int64_t> due = f.admit ? std::nullopt : std::optional(f.start_at);
    const std::optional<std::int64_t> admit = f.admit ? std::optional(f.start_at) : std::nullopt;
    tx.exec(
        "INSERT INTO queue (run_id, due_at, priority, workflow_id, admit_at, flow, conc1, conc2, "
        "held) VALUES ($1, $2, 0, $3, $4, $5, $6, $7, $8)",
        id, due, f.run.workflow_id, admit, f.flow, f.conc1, f.conc2, f.held);
    if (f.held && *f.held == "batch") add_to_batch(tx, id, 0, event_id);
    return id;
}

KeyState FlowStore::lock(Transaction& tx, const std::string& key) {
    auto rows = tx.exec(
        "INSERT INTO flow_state (key) VALUES ($1) ON CONFLICT (key) DO UPDATE SET n = "
        "flow_state.n RETURNING n, at, run_id, times",
        key);
    const Row row = rows.front();
    return KeyState{row.get<std::int64_t>(0), row.get_opt<std::int64_t>(1),
                    row.get_opt<std::string>(2), row.get_opt<std::string>(3)};
}

void FlowStore::put(Transaction& tx, const std::string& key, const KeyState& s) {
    tx.exec("UPDATE flow_state SET n = $2, at = $3, run_id = $4, times = $5 WHERE key = $1", key,
            s.n, s.at, s.run_id, s.times);
}

void FlowStore::lock(Transaction& tx, std::map<std::string, KeyState>& keys) {
    if (keys.empty()) return;
    std::vector<Value> params;
    std::string rows;
    for (const auto& [key, state] : keys) {
        params.emplace_back(key);
        rows += fmt::format("{}(${})", rows.empty() ? "" : ", ", params.size());
    }
    // Rows are inserted (or locked) in the order of VALUES: the keys' own.
    for (auto row : tx.exec_values(
             fmt::format("INSERT INTO flow_state (key) VALUES {} ON CONFLICT (key) DO UPDATE "
                         "SET n = flow_state.n RETURNING key, n, at, run_id, times",
                         rows),
             params))
        keys[row.get<std::string>(0)] =
            KeyState{row.get<std::int64_t>(1), row.get_opt<std::int64_t>(2),
                     row.get_opt<std::string>(3), row.get_opt<std::string>(4)};
}

void FlowStore::put(Transaction& tx, const std::map<std::string, KeyState>& keys) {
    if (keys.empty()) return;
    std::vector<Value> params;
    std::string rows;
    for (const auto& [key, s] : keys) {
        const std::size_t at = params.size();
        for (Value v :
             {to_value(key), to_value(s.n), to_value(s.at), to_value(s.run_id), to_value(s.times)})
            params.push_back(std::move(v));
        // SELECT ... UNION ALL rather than VALUES: SQLite names no VALUES columns.
        rows += fmt::format(
            "{}SELECT CAST(${} AS TEXT) AS key, CAST(${} AS BIGINT) AS n, CAST(${} AS BIGINT) AS "
            "at, CAST(${} AS TEXT) AS run_id, CAST(${} AS TEXT) AS times",
            rows.empty() ? "" : " UNION ALL ", at + 1, at + 2, at + 3, at + 4, at + 5);
    }
    tx.exec_values(fmt::format("UPDATE flow_state SET n = v.n, at = v.at, run_id = v.run_id, "
                               "times = v.times FROM ({}) AS v WHERE flow_state.key = v.key",
                               rows),
                   params);
}

void FlowStore::skip(Transaction& tx, const std::string& event_id, const std::string& workflow_id,
                     std::string_view reason, std::int64_t now) {
    tx.exec(
        "INSERT INTO event_skips (event_id, workflow_id, reason, at) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT DO NOTHING",
        event_id, workflow_id, reason, now);
}

std::map<std::string, std::vector<SkippedStart>> FlowStore::skips(
    std::span<const std::string> event_ids) {
    std::map<std::string, std::vector<SkippedStart>> out;
    if (event_ids.empty()) return out;
    std::string list;
    std::vector<Value> params;
    for (const std::string& id : event_ids) {
        params.emplace_back(id);
        list += fmt::format("{}${}", list.empty() ? "" : ", ", params.size());
    }
    db_.transact(
        [&](Transaction& tx) {
            for (auto row : tx.exec_values(
                     fmt::format("SELECT event_id, workflow_id, reason, at FROM event_skips "
                                 "WHERE event_id IN ({}) ORDER BY event_id, workflow_id",
                                 list),
                     params)) {
                SkippedStart s{row.get<std::string>(0), row.get<std::string>(1),
                               row.get<std::string>(2), row.get<std::int64_t>(3)};
                out[s.event_id].push_back(std::move(s));
            }
        },
        Access::read_only);
    return out;
}

bool FlowStore::still_held(Transaction& tx, const std::string& run_id, std::string_view held) {
    return tx.exec(
                 "UPDATE queue SET held = held WHERE run_id = $1 AND held = $2 AND admit_at IS "
                 "NOT NULL AND EXISTS (SELECT 1 FROM runs r WHERE r.id = $1 AND r.status = "
                 "'queued')",
                 run_id, held)
               .affected() == 1;
}

void FlowStore::retarget(Transaction& tx, const std::string& run_id, const std::string& event_id,
                         std::int64_t admit_at, std::int64_t now) {
    tx.exec("UPDATE runs SET event_id = $2, updated_at = $3 WHERE id = $1", run_id, event_id, now);
    this->admit_at(tx, run_id, admit_at);
}

void FlowStore::add_to_batch(Transaction& tx, const std::string& run_id, std::int64_t seq,
                             const std::string& event_id) {
    tx.exec("INSERT INTO run_events (run_id, seq, event_id) VALUES ($1, $2, $3)", run_id, seq,
            event_id);
}

void FlowStore::admit_at(Transaction& tx, const std::string& run_id, std::int64_t at) {
    tx.exec("UPDATE queue SET admit_at = $2 WHERE run_id = $1", run_id, at);
}

std::vector<EventRecord> FlowStore::batch_events(const std::string& run_id) {
    std::vector<EventRecord> out;
    db_.transact(
        [&](Transaction& tx) {
            for (auto row :
                 tx.exec("SELECT e.id, e.name, e.data, e.ts, e.idempotency_key, e.received_at "
                         "FROM run_events b JOIN events e ON e.id = b.event_id "
                         "WHERE b.run_id = $1 ORDER BY b.seq",
                         run_id))
                out.push_back(detail::read_event(row));
        },
        Access::read_only);
    return out;
}

std::vector<PendingItem> FlowStore::pending(Transaction& tx, std::int64_t now, int limit,
                                            const Value& workflows) {
    const bool pg = tx.backend() == Backend::postgres;
    const std::string sql = fmt::format(
        "SELECT q.run_id, q.workflow_id, q.conc1, q.conc2, q.flow, q.admit_at, "
        "CASE WHEN r.status IN ('completed', 'failed', 'cancelled') THEN 1 ELSE 0 END "
        "FROM queue q JOIN runs r ON r.id = q.run_id "
        "WHERE q.admit_at <= $1 AND q.held_key IS NULL AND {} "
        "ORDER BY q.admit_at, q.run_id LIMIT $2{}",
        workflow_filter(tx.backend(), 3), pg ? " FOR UPDATE OF q SKIP LOCKED" : "");
    const Value params[] = {to_value(now), to_value(limit), workflows};
    std::vector<PendingItem> out;
    for (auto row : tx.exec_values(sql, params)) {
        out.push_back(PendingItem{row.get<std::string>(0), row.get<std::string>(1),
                                  row.get_opt<std::string>(2), row.get_opt<std::string>(3),
                                  row.get_opt<std::string>(4), row.get<std::int64_t>(5),
                                  row.get<std::int64_t>(6) != 0});
    }
    return out;
}

FlowStore::AdmissionDue FlowStore::admission_due(const Value& workflows) {
    return db_.transact(
        [&](Transaction& tx) {
            const std::string sql = fmt::format(
                "SELECT (SELECT MIN(q.admit_at) FROM queue q WHERE q.admit_at IS NOT NULL AND "
                "q.held_key IS NULL AND {}), "
                "(SELECT COUNT(*) FROM (SELECT 1 FROM flow_releases LIMIT 1) r)",
                workflow_filter(tx.backend(), 1));
            const Value params[] = {workflows};
            const Row row = tx.exec_values(sql, params).front();
            return AdmissionDue{row.get_opt<std::int64_t>(0), row.get<std::int64_t>(1) > 0};
        },
        Access::read_only);
}

std::vector<std::string> FlowStore::take_releases(Transaction& tx, int limit) {
    const bool pg = tx.backend() == Backend::postgres;
    std::vector<std::string> keys;
    for (auto row : tx.exec(fmt::format("DELETE FROM flow_releases WHERE id IN (SELECT id FROM "
                                        "flow_releases ORDER BY id LIMIT $1{}) RETURNING key",
                                        pg ? " FOR UPDATE SKIP LOCKED" : ""),
                            limit))
        keys.push_back(row.get<std::string>(0));
    return keys;
}

void FlowStore::admit(Transaction& tx, std::span<const std::string> run_ids, std::int64_t now) {
    if (run_ids.empty()) return;
    std::vector<Value> params{to_value(now)};
    std::string list;
    for (const std::string& id : run_ids) {
        params.emplace_back(id);
        list += fmt::format("{}${}", list.empty() ? "" : ", ", params.size());
    }
    tx.exec_values(fmt::format("UPDATE queue SET admit_at = NULL, held = NULL, flow = NULL, "
                               "due_at = $1, slots = CASE WHEN conc1 IS NULL THEN 0 ELSE 1 END "
                               "WHERE run_id IN ({})",
                               list),
                   params);
}

void FlowStore::park(Transaction& tx, const std::string& run_id, const std::string& key) {
    tx.exec("UPDATE queue SET held_key = $2, held = 'concurrency' WHERE run_id = $1", run_id, key);
}

void FlowStore::defer(Transaction& tx, const std::string& run_id, std::int64_t at,
                      std::string_view held) {
    tx.exec("UPDATE queue SET admit_at = $2, held = $3, flow = NULL WHERE run_id = $1", run_id, at,
            held);
}

void FlowStore::drop(Transaction& tx, const std::string& run_id) {
    tx.exec(
        "UPDATE queue SET admit_at = NULL, held = NULL, held_key = NULL, flow = NULL "
        "WHERE run_id = $1",
        run_id);
}

bool FlowStore::promote(Transaction& tx, const std::string& key) {
    return tx.exec(
                 "UPDATE queue SET held_key = NULL, held = NULL WHERE run_id = (SELECT run_id "
                 "FROM queue WHERE held_key = $1 ORDER BY admit_at, run_id LIMIT 1)",
                 key)
               .affected() == 1;
}

std::int64_t FlowStore::promote(Transaction& tx, std::span<const std::string> keys) {
    if (keys.empty()) return 0;
    std::vector<Value> params;
    std::string list;
    for (const std::string& k : keys) {
        params.emplace_back(k);
        list += fmt::format("{}SELECT CAST(${} AS TEXT) AS key", list.empty() ? "" : " UNION ALL ",
                            params.size());
    }
    // For each key, the oldest item parked on it (one index probe of queue_parked each).
    return tx
        .exec_values(fmt::format("UPDATE queue SET held_key = NULL, held = NULL WHERE run_id IN "
                                 "(SELECT (SELECT q.run_id FROM queue q WHERE q.held_key = k.key "
                                 "ORDER BY q.admit_at, q.run_id LIMIT 1) FROM ({}) k)",
                                 list),
                     params)
        .affected();
}

std::optional<HeldItem> FlowStore::held(const std::string& run_id) {
    return db_.transact(
        [&](Transaction& tx) -> std::optional<HeldItem> {
            auto rows = tx.exec(
                "SELECT COALESCE(q.held, 'admission'), q.held_key, q.admit_at, "
                "COALESCE((SELECT f.n FROM flow_state f WHERE f.key = q.held_key), 0), "
                "(SELECT COUNT(*) FROM run_events b WHERE b.run_id = q.run_id) "
                "FROM queue q WHERE q.run_id = $1 AND q.admit_at IS NOT NULL",
                run_id);
            if (rows.empty()) return std::nullopt;
            const Row row = rows.front();
            return HeldItem{row.get<std::string>(0), row.get_opt<std::string>(1),
                            row.get_opt<std::int64_t>(2), row.get<std::int64_t>(3),
                            row.get<std::int64_t>(4)};
        },
        Access::read_only);
}

std::vector<QueueDepth> FlowStore::queue_depths(std::int64_t now) {
    std::vector<QueueDepth> out;
    db_.transact(
        [&](Transaction& tx) {
            // Three partial indexes cover every unfinished item: due now or later
            // (queue_claim), waiting for admission (queue_admit), parked (queue_parked).
            for (auto row :
                 tx.exec("SELECT workflow_id, reason, COUNT(*) FROM ("
                         "SELECT workflow_id, CASE WHEN lease_owner IS NOT NULL THEN 'running' "
                         "WHEN due_at <= $1 THEN 'due' ELSE 'scheduled' END AS reason FROM queue "
                         "WHERE due_at IS NOT NULL "
                         "UNION ALL SELECT workflow_id, COALESCE(held, 'admission') FROM queue "
                         "WHERE admit_at IS NOT NULL AND held_key IS NULL "
                         "UNION ALL SELECT workflow_id, 'concurrency' FROM queue "
                         "WHERE held_key IS NOT NULL) h GROUP BY workflow_id, reason "
                         "ORDER BY workflow_id, reason",
                         now))
                out.push_back({row.get_opt<std::string>(0).value_or(""), row.get<std::string>(1),
                               row.get<std::int64_t>(2)});
        },
        Access::read_only);
    return out;
}

}  // namespace cairn::storage
