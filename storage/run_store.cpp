#include "storage/run_store.hpp"

#include <fmt/format.h>

#include "common/ids.hpp"

namespace cairn::storage {
namespace {

// While an item is leased its due_at is the lease expiry, so one partial index on due_at
// finds both new work and work whose holder died. A parked item (finished run) has
// due_at NULL and is kept, so its lease epoch never goes back to zero.
constexpr std::string_view kEngineV1 = R"sql(
CREATE TABLE events (
    id              TEXT   PRIMARY KEY,
    name            TEXT   NOT NULL,
    data            TEXT   NOT NULL,
    ts              BIGINT NOT NULL,
    idempotency_key TEXT   UNIQUE,
    received_at     BIGINT NOT NULL
);
CREATE INDEX events_name_ts ON events (name, ts);

CREATE TABLE runs (
    id          TEXT   PRIMARY KEY,
    workflow_id TEXT   NOT NULL,
    version     TEXT   NOT NULL,
    event_id    TEXT   NOT NULL REFERENCES events (id),
    status      TEXT   NOT NULL,
    output      TEXT,
    error       TEXT,
    attempt     BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    started_at  BIGINT,
    ended_at    BIGINT,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX runs_workflow ON runs (workflow_id, id);
CREATE INDEX runs_status ON runs (status, id);
CREATE INDEX runs_event ON runs (event_id);

CREATE TABLE steps (
    run_id     TEXT   NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_key   TEXT   NOT NULL,
    seq        BIGINT NOT NULL,
    status     TEXT   NOT NULL,
    output     TEXT,
    error      TEXT,
    attempts   BIGINT NOT NULL DEFAULT 0,
    started_at BIGINT,
    ended_at   BIGINT,
    PRIMARY KEY (run_id, step_key)
);

CREATE TABLE queue (
    run_id      TEXT   PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    due_at      BIGINT,
    priority    BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until BIGINT,
    lease_epoch BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX queue_due ON queue (due_at) WHERE due_at IS NOT NULL;

CREATE TABLE waits (
    run_id      TEXT   NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_key    TEXT   NOT NULL,
    event_name  TEXT   NOT NULL,
    match_field TEXT,
    match_value TEXT,
    expires_at  BIGINT,
    PRIMARY KEY (run_id, step_key)
);
CREATE INDEX waits_event ON waits (event_name, match_value);
)sql";

constexpr Migration kMigrations[] = {
    {1, "engine tables: events, runs, steps, queue, waits", kEngineV1},
};

constexpr std::string_view kRunColumns =
    "r.id, r.workflow_id, r.version, r.event_id, e.name, r.status, r.output, r.error, r.attempt, "
    "r.created_at, r.started_at, r.ended_at";

RunRecord read_run(const Row& row) {
    RunRecord r;
    r.id = row.get<std::string>(0);
    r.workflow_id = row.get<std::string>(1);
    r.version = row.get<std::string>(2);
    r.event_id = row.get<std::string>(3);
    r.event_name = row.get<std::string>(4);
    r.status = row.get<std::string>(5);
    r.output = row.get_opt<std::string>(6);
    r.error = row.get_opt<std::string>(7);
    r.attempt = row.get<std::int64_t>(8);
    r.created_at = row.get<std::int64_t>(9);
    r.started_at = row.get_opt<std::int64_t>(10);
    r.ended_at = row.get_opt<std::int64_t>(11);
    return r;
}

// Escapes LIKE wildcards so user text matches literally (with ESCAPE '\').
std::string like_prefix(std::string_view text) {
    std::string out;
    for (char c : text) {
        if (c == '%' || c == '_' || c == '\\') out.push_back('\\');
        out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    }
    out.push_back('%');
    return out;
}

}  // namespace

Component run_store_component() {
    return Component{"engine", kMigrations};
}

InsertedEvent RunStore::insert_event(Transaction& tx, const NewEvent& event,
                                     std::span<const NewRun> runs, std::int64_t now) {
    if (event.name.empty()) throw std::invalid_argument("event name must not be empty");
    InsertedEvent out;
    out.event_id = event.id.value_or(new_id_at(now));
    auto inserted = tx.exec(
        "INSERT INTO events (id, name, data, ts, idempotency_key, received_at) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING id",
        out.event_id, event.name, event.data, event.ts.value_or(now), event.idempotency_key, now);

    if (inserted.empty()) {
        // Seen before: report what the first delivery started and write nothing.
        auto first = tx.exec(
            "SELECT id FROM events WHERE id = $1 OR idempotency_key = $2 ORDER BY id LIMIT 1",
            out.event_id, event.idempotency_key);
        if (first.empty()) {
            throw StorageError(to_string(tx.backend()),
                               "event insert conflicted but no earlier event was found");
        }
        out.event_id = first.front().get<std::string>(0);
        out.duplicate = true;
        for (auto row :
             tx.exec("SELECT id FROM runs WHERE event_id = $1 ORDER BY id", out.event_id)) {
            out.run_ids.push_back(row.get<std::string>(0));
        }
        return out;
    }

    for (const NewRun& run : runs) {
        std::string run_id = new_id_at(now);
        tx.exec(
            "INSERT INTO runs (id, workflow_id, version, event_id, status, attempt, created_at, "
            "updated_at) "
            "VALUES ($1, $2, $3, $4, $5, 0, $6, $6)",
            run_id, run.workflow_id, run.version, out.event_id, run_status::kQueued, now);
        tx.exec("INSERT INTO queue (run_id, due_at, priority) VALUES ($1, $2, $3)", run_id, now,
                run.priority);
        out.run_ids.push_back(std::move(run_id));
    }
    return out;
}

InsertedEvent RunStore::insert_event(const NewEvent& event, std::span<const NewRun> runs,
                                     std::int64_t now) {
    return db_.transact([&](Transaction& tx) { return insert_event(tx, event, runs, now); });
}

std::vector<Lease> RunStore::claim(std::string_view owner, int limit, std::int64_t now,
                                   std::int64_t lease_ms) {
    if (limit <= 0) return {};
    const std::int64_t until = now + lease_ms;
    const std::string sql = fmt::format(
        "UPDATE queue SET lease_owner = $1, lease_until = $2, due_at = $2, lease_epoch = "
        "lease_epoch + 1 "
        "WHERE run_id IN (SELECT run_id FROM queue WHERE due_at <= $3 "
        "ORDER BY priority DESC, due_at, run_id LIMIT $4{}) "
        "RETURNING run_id, lease_epoch",
        db_.dialect().skip_locked());
    auto rows = db_.exec(sql, owner, until, now, limit);
    std::vector<Lease> out;
    out.reserve(rows.size());
    for (auto row : rows) {
        out.push_back(
            Lease{row.get<std::string>(0), std::string(owner), row.get<std::int64_t>(1), until});
    }
    return out;
}

bool RunStore::renew(Lease& lease, std::int64_t now, std::int64_t lease_ms) {
    const std::int64_t until = now + lease_ms;
    auto r = db_.exec(
        "UPDATE queue SET lease_until = $4, due_at = $4 "
        "WHERE run_id = $1 AND lease_owner = $2 AND lease_epoch = $3",
        lease.run_id, lease.owner, lease.epoch, until);
    if (r.affected() != 1) return false;
    lease.until = until;
    return true;
}

bool RunStore::release(const Lease& lease, std::optional<std::int64_t> next_due) {
    auto r = db_.exec(
        "UPDATE queue SET lease_owner = NULL, lease_until = NULL, due_at = $4 "
        "WHERE run_id = $1 AND lease_owner = $2 AND lease_epoch = $3",
        lease.run_id, lease.owner, lease.epoch, next_due);
    return r.affected() == 1;
}

bool RunStore::hold_fence(Transaction& tx, const Lease& lease) {
    // An UPDATE rather than a SELECT: it takes the row lock on Postgres, so a concurrent
    // claim waits for this transaction (or this one sees the claim's new epoch).
    auto r = tx.exec(
        "UPDATE queue SET lease_epoch = lease_epoch WHERE run_id = $1 AND lease_owner = $2 AND "
        "lease_epoch = $3",
        lease.run_id, lease.owner, lease.epoch);
    return r.affected() == 1;
}

bool RunStore::record_step(const Lease& lease, const StepRecord& step) {
    return db_.transact([&](Transaction& tx) {
        if (!hold_fence(tx, lease)) return false;
        // A completed step is final: a second write of the same key changes nothing.
        tx.exec(
            "INSERT INTO steps (run_id, step_key, seq, status, output, error, attempts, "
            "started_at, ended_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
            "ON CONFLICT (run_id, step_key) DO UPDATE SET seq = excluded.seq, status = "
            "excluded.status, "
            "output = excluded.output, error = excluded.error, attempts = excluded.attempts, "
            "started_at = COALESCE(steps.started_at, excluded.started_at), ended_at = "
            "excluded.ended_at "
            "WHERE steps.status <> 'completed'",
            step.run_id, step.key, step.seq, step.status, step.output, step.error, step.attempts,
            step.started_at, step.ended_at);
        return true;
    });
}

bool RunStore::finish_run(const Lease& lease, std::string_view status,
                          const std::optional<std::string>& output,
                          const std::optional<std::string>& error, std::int64_t now) {
    return db_.transact([&](Transaction& tx) {
        if (!hold_fence(tx, lease)) return false;
        tx.exec(
            "UPDATE runs SET status = $2, output = $3, error = $4, ended_at = $5, updated_at = $5 "
            "WHERE id = $1",
            lease.run_id, status, output, error, now);
        tx.exec(
            "UPDATE queue SET lease_owner = NULL, lease_until = NULL, due_at = NULL WHERE run_id = "
            "$1",
            lease.run_id);
        return true;
    });
}

std::optional<RunRecord> RunStore::get_run(std::string_view run_id) {
    auto rows = db_.transact(
        [&](Transaction& tx) {
            return tx.exec(
                fmt::format(
                    "SELECT {} FROM runs r JOIN events e ON e.id = r.event_id WHERE r.id = $1",
                    kRunColumns),
                run_id);
        },
        Access::read_only);
    if (rows.empty()) return std::nullopt;
    return read_run(rows.front());
}

std::optional<EventRecord> RunStore::get_event(std::string_view event_id) {
    auto rows = db_.transact(
        [&](Transaction& tx) {
            return tx.exec(
                "SELECT id, name, data, ts, idempotency_key, received_at FROM events WHERE id = $1",
                event_id);
        },
        Access::read_only);
    if (rows.empty()) return std::nullopt;
    auto row = rows.front();
    return EventRecord{row.get<std::string>(0),     row.get<std::string>(1),
                       row.get<std::string>(2),     row.get<std::int64_t>(3),
                       row.get_opt<std::string>(4), row.get<std::int64_t>(5)};
}

std::vector<StepRecord> RunStore::steps(std::string_view run_id) {
    auto rows = db_.transact(
        [&](Transaction& tx) {
            return tx.exec(
                "SELECT run_id, step_key, seq, status, output, error, attempts, started_at, "
                "ended_at "
                "FROM steps WHERE run_id = $1 ORDER BY seq",
                run_id);
        },
        Access::read_only);
    std::vector<StepRecord> out;
    out.reserve(rows.size());
    for (auto row : rows) {
        out.push_back(StepRecord{
            row.get<std::string>(0), row.get<std::string>(1), row.get<std::int64_t>(2),
            row.get<std::string>(3), row.get_opt<std::string>(4), row.get_opt<std::string>(5),
            row.get<std::int64_t>(6), row.get_opt<std::int64_t>(7), row.get_opt<std::int64_t>(8)});
    }
    return out;
}

RunPage RunStore::list_runs(const RunFilter& filter, std::optional<std::string> cursor, int limit) {
    if (limit < 1 || limit > 1000) throw std::invalid_argument("limit must be from 1 to 1000");
    std::string sql = fmt::format(
        "SELECT {} FROM runs r JOIN events e ON e.id = r.event_id WHERE 1 = 1", kRunColumns);
    std::vector<Value> params;
    auto add = [&](std::string_view condition, Value v) {
        params.push_back(std::move(v));
        sql += fmt::format(" AND {}", fmt::format(fmt::runtime(condition), params.size()));
    };
    if (filter.workflow_id) add("r.workflow_id = ${}", *filter.workflow_id);
    if (filter.status) add("r.status = ${}", *filter.status);
    if (filter.event_name) add("e.name = ${}", *filter.event_name);
    if (filter.created_from) add("r.created_at >= ${}", *filter.created_from);
    if (filter.created_to) add("r.created_at < ${}", *filter.created_to);
    if (filter.search && !filter.search->empty()) {
        add("(r.id LIKE ${0} ESCAPE '\\' OR r.event_id LIKE ${0} ESCAPE '\\')",
            like_prefix(*filter.search));
    }
    if (cursor) add("r.id < ${}", *cursor);
    params.emplace_back(static_cast<std::int64_t>(limit) +
                        1);  // one extra row tells whether more follow
    sql += fmt::format(" ORDER BY r.id DESC LIMIT ${}", params.size());

    auto rows = db_.transact([&](Transaction& tx) { return tx.exec_values(sql, params); },
                             Access::read_only);
    RunPage page;
    for (auto row : rows) {
        if (page.runs.size() == static_cast<std::size_t>(limit)) {
            page.next_cursor = page.runs.back().id;
            break;
        }
        page.runs.push_back(read_run(row));
    }
    return page;
}

std::int64_t RunStore::queue_depth() {
    return db_
        .transact(
            [](Transaction& tx) {
                return tx.exec("SELECT count(*) FROM queue WHERE due_at IS NOT NULL");
            },
            Access::read_only)
        .front()
        .get<std::int64_t>(0);
}

}  // namespace cairn::storage
