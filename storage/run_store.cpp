#include "storage/run_store.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <array>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

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
    id              TEXT   PRIMARY KEY,
    workflow_id     TEXT   NOT NULL,
    version         TEXT   NOT NULL,
    event_id        TEXT   NOT NULL REFERENCES events (id),
    status          TEXT   NOT NULL,
    output          TEXT,
    error           TEXT,
    attempt         BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    started_at      BIGINT,
    ended_at        BIGINT,
    updated_at      BIGINT NOT NULL,
    parent_run_id   TEXT,
    parent_step_key TEXT,
    worker          TEXT,
    replay_of       TEXT
);
CREATE INDEX runs_workflow ON runs (workflow_id, id);
CREATE INDEX runs_updated ON runs (updated_at);
CREATE INDEX runs_status ON runs (status, id);
CREATE INDEX runs_event ON runs (event_id);

CREATE TABLE steps (
    run_id     TEXT   NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_key   TEXT   NOT NULL,
    seq        BIGINT NOT NULL,
    kind       TEXT   NOT NULL DEFAULT 'step',
    status     TEXT   NOT NULL,
    output     TEXT,
    error      TEXT,
    attempts   BIGINT NOT NULL DEFAULT 0,
    started_at BIGINT,
    ended_at   BIGINT,
    wake_at    BIGINT,
    PRIMARY KEY (run_id, step_key)
);

CREATE TABLE step_attempts (
    run_id     TEXT   NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step_key   TEXT   NOT NULL,
    generation BIGINT NOT NULL DEFAULT 0,
    attempt    BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at   BIGINT NOT NULL,
    outcome    TEXT   NOT NULL,
    error      TEXT,
    logs       TEXT   NOT NULL DEFAULT '[]',
    worker     TEXT,
    PRIMARY KEY (run_id, step_key, generation, attempt)
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
    match_field TEXT   NOT NULL,
    match_value TEXT,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (run_id, step_key)
);
CREATE INDEX waits_event ON waits (event_name);
)sql";

// Claims walk the queue in claim order and stop after LIMIT rows, instead of sorting every
// due item (with thousands queued, that sort was the dearest part of a claim).
constexpr std::string_view kEngineV2 = R"sql(
CREATE INDEX queue_claim ON queue (priority DESC, due_at, run_id) WHERE due_at IS NOT NULL;
DROP INDEX queue_due;
)sql";

// Postgres checks a foreign key with a locking read of the parent row (SELECT ... FOR KEY
// SHARE) per inserted row: two per step, a tenth of the server's time in the throughput
// benchmark. The engine writes steps and attempts only behind the fence of the run's queue
// item, whose own key to runs stays, and never deletes runs; so these two keys checked
// nothing the fence does not (docs/storage.md). SQLite's checks are plain index lookups and
// cost nothing measurable there, and it cannot drop a constraint, so it keeps them.
constexpr std::string_view kEngineV3 = R"sql(
ALTER TABLE steps DROP CONSTRAINT steps_run_id_fkey;
ALTER TABLE step_attempts DROP CONSTRAINT step_attempts_run_id_fkey;
)sql";

// Postgres plans the claim statement anew on every call: with the LIMIT a parameter, a
// generic plan would assume a tenth of the queue is taken and scan it, so the custom plan
// always looks cheaper (0.4 ms of planning per claim under load). A function can carry
// plan_cache_mode, and PL/pgSQL keeps its statements' plans per connection: here the claim
// is planned once per connection, as the index walk (the ANY(ARRAY(...)) form's generic
// plan walks queue_claim and stops at the limit). The same claim as SQLite's two
// statements below: take the due items in claim order, skipping locked ones; renew their
// lease; mark their runs running unless ended. docs/performance.md, section 9.
constexpr std::string_view kEngineV4 = R"sql(
CREATE FUNCTION cairn_claim(p_owner TEXT, p_until BIGINT, p_now BIGINT, p_limit INTEGER)
RETURNS TABLE (claimed_run TEXT, claimed_epoch BIGINT)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $fn$
BEGIN
    RETURN QUERY
    WITH claimed AS (
        UPDATE queue q SET lease_owner = p_owner, lease_until = p_until, due_at = p_until,
            lease_epoch = q.lease_epoch + 1
        WHERE q.run_id = ANY (ARRAY(
            SELECT w.run_id FROM queue w WHERE w.due_at <= p_now
            ORDER BY w.priority DESC, w.due_at, w.run_id LIMIT p_limit FOR UPDATE SKIP LOCKED))
        RETURNING q.run_id, q.lease_epoch),
    started AS (
        UPDATE runs r SET status = 'running', worker = p_owner, updated_at = p_now,
            started_at = COALESCE(r.started_at, p_now)
        FROM claimed c WHERE r.id = c.run_id
            AND r.status NOT IN ('completed', 'failed', 'cancelled'))
    SELECT c.run_id, c.lease_epoch FROM claimed c;
END
$fn$;
)sql";

// A step that completes on its first attempt (nearly every step) keeps that attempt in its
// own row: what its attempt row would say beyond the step row (the run's retry
// generation, the worker, the attempt's log lines); started_at, ended_at and the outcome
// are the step's, which a completed step never changes. Every other attempt is a row of
// step_attempts, as are first attempts recorded before this migration. attempt_history
// is every attempt in either place. A step's attempt row was two B-tree insertions more
// per step (docs/performance.md, section 23).
constexpr std::string_view kEngineV5 = R"sql(
ALTER TABLE steps ADD COLUMN attempt_generation BIGINT;
ALTER TABLE steps ADD COLUMN attempt_worker TEXT;
ALTER TABLE steps ADD COLUMN attempt_logs TEXT;
CREATE VIEW attempt_history AS
SELECT run_id, step_key, generation, attempt, started_at, ended_at, outcome, error, logs, worker
FROM step_attempts
UNION ALL
SELECT run_id, step_key, attempt_generation, 1, started_at, ended_at, 'completed', NULL,
    attempt_logs, attempt_worker
FROM steps WHERE attempt_generation IS NOT NULL;
)sql";

// The change feed follows runs.updated_at, and every step used to touch its run for it:
// an UPDATE of the run's row per step, which on Postgres is a new row version with an
// entry in each of runs' five indexes, and on both moves the run in runs_updated. A step
// now carries its own change time, indexed for the feed, which merges the runs' changes
// and the steps' (changes_since); a run's updated_at as read is the later of its row's
// and its steps' (run_columns). docs/performance.md, section 24.
constexpr std::string_view kEngineV6 = R"sql(
ALTER TABLE steps ADD COLUMN changed_at BIGINT;
CREATE INDEX steps_changed ON steps (changed_at, run_id);
)sql";

constexpr Migration kMigrations[] = {
    {1, "engine tables: events, runs, steps, queue, waits", kEngineV1},
    {2, "queue index in claim order", kEngineV2},
    {3, "steps and attempts without a foreign key on Postgres", kEngineV3, Backend::postgres},
    {4, "the claim as a function with a generic plan on Postgres", kEngineV4, Backend::postgres},
    {5, "a step's first attempt in its own row when it completed", kEngineV5},
    {6, "steps with their own change time for the change feed", kEngineV6},
};

// A run's columns for read_run but the last, its updated_at.
constexpr std::string_view kRunColumnsButUpdated =
    "r.id, r.workflow_id, r.version, r.event_id, e.name, r.status, r.output, r.error, r.attempt, "
    "r.created_at, r.started_at, r.ended_at, r.parent_run_id, r.parent_step_key, r.worker, "
    "r.replay_of";

// A run's columns for read_run. A run changes when its row does or when one of its steps
// does (engine 6): its updated_at is the later of the two.
const std::string& run_columns() {
    static const std::string columns = fmt::format(
        "{}, COALESCE((SELECT max(s.changed_at) FROM steps s WHERE s.run_id = r.id AND "
        "s.changed_at > r.updated_at), r.updated_at)",
        kRunColumnsButUpdated);
    return columns;
}

constexpr std::string_view kStepColumns =
    "run_id, step_key, seq, status, output, error, attempts, started_at, ended_at, kind, wake_at";

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
    r.parent_run_id = row.get_opt<std::string>(12);
    r.parent_step_key = row.get_opt<std::string>(13);
    r.worker = row.get_opt<std::string>(14);
    r.replay_of = row.get_opt<std::string>(15);
    r.updated_at = row.get<std::int64_t>(16);
    return r;
}

StepRecord read_step(const Row& row) {
    StepRecord s;
    s.run_id = row.get<std::string>(0);
    s.key = row.get<std::string>(1);
    s.seq = row.get<std::int64_t>(2);
    s.status = row.get<std::string>(3);
    s.output = row.get_opt<std::string>(4);
    s.error = row.get_opt<std::string>(5);
    s.attempts = row.get<std::int64_t>(6);
    s.started_at = row.get_opt<std::int64_t>(7);
    s.ended_at = row.get_opt<std::int64_t>(8);
    s.kind = row.get<std::string>(9);
    s.wake_at = row.get_opt<std::int64_t>(10);
    return s;
}

EventRecord read_event(const Row& row) {
    return EventRecord{row.get<std::string>(0),     row.get<std::string>(1),
                       row.get<std::string>(2),     row.get<std::int64_t>(3),
                       row.get_opt<std::string>(4), row.get<std::int64_t>(5)};
}

constexpr std::string_view kEventColumns = "id, name, data, ts, idempotency_key, received_at";

// Statements shared by several readers, formatted once.
const std::string& run_by_id_sql() {
    static const std::string sql = fmt::format(
        "SELECT {} FROM runs r JOIN events e ON e.id = r.event_id WHERE r.id = $1", run_columns());
    return sql;
}
const std::string& event_by_id_sql() {
    static const std::string sql =
        fmt::format("SELECT {} FROM events WHERE id = $1", kEventColumns);
    return sql;
}
const std::string& steps_of_run_sql() {
    static const std::string sql =
        fmt::format("SELECT {} FROM steps WHERE run_id = $1 ORDER BY seq", kStepColumns);
    return sql;
}

// A run with its event and whether it has steps yet (column kFreshColumn), for load and
// claims: the run columns, then these.
constexpr std::string_view kStateExtraColumns =
    "e.data, e.ts, e.idempotency_key, e.received_at, "
    "NOT EXISTS (SELECT 1 FROM steps st WHERE st.run_id = r.id)";
constexpr std::size_t kFreshColumn = 21;

const std::string& run_state_sql() {
    static const std::string sql =
        fmt::format("SELECT {}, {} FROM runs r JOIN events e ON e.id = r.event_id WHERE r.id = $1",
                    run_columns(), kStateExtraColumns);
    return sql;
}

// The run and its event from a row of run_state_sql's shape; no steps.
RunState read_state(const Row& row) {
    RunState state;
    state.run = read_run(row);
    state.event = EventRecord{state.run.event_id,      state.run.event_name,
                              row.get<std::string>(17), row.get<std::int64_t>(18),
                              row.get_opt<std::string>(19), row.get<std::int64_t>(20)};
    return state;
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

namespace {

// Postgres: the CTEs that insert the event, its runs and their queue items, named with
// `s` appended (e{s}, v{s}, r{s}, q{s}), so that several events' CTEs can share a WITH. The
// event is inserted only if it is new and passes `guard` (a WHERE over CTEs that come
// before these); everything else is written only for an inserted event (`FROM e{s}`).
// With `claimed`, the runs are written as a claim leaves them: running, their items
// leased (epoch 1).
std::string event_ctes(Params& param, const NewEvent& event, const std::string& event_id,
                       std::span<const NewRun> runs, std::span<const std::string> run_ids,
                       std::int64_t now, std::string_view guard, const ClaimedBy* claimed,
                       std::string_view s) {
    const std::string e = fmt::format(
        "e{} AS (INSERT INTO events (id, name, data, ts, idempotency_key, received_at) "
        "SELECT {}, {}, {}, CAST({} AS BIGINT), {}, CAST({} AS BIGINT) {} "
        "ON CONFLICT DO NOTHING RETURNING id)",
        s, param(event_id), param(event.name), param(event.data), param(event.ts.value_or(now)),
        param(event.idempotency_key), param(now), guard);
    std::string rows;
    for (std::size_t i = 0; i < runs.size(); ++i) {
        rows += fmt::format("{}({}, {}, {}, CAST({} AS BIGINT), {}, {})", rows.empty() ? "" : ", ",
                            param(run_ids[i]), param(runs[i].workflow_id), param(runs[i].version),
                            param(runs[i].priority), param(runs[i].parent_run_id),
                            param(runs[i].parent_step_key));
    }
    const std::string at = param(now);
    // Queued: due now, no lease. Claimed: running since now, leased until `until`.
    std::string status = "'queued'", started = "CAST(NULL AS BIGINT)", worker = "NULL", due = at,
                lease = "NULL, CAST(NULL AS BIGINT), 0";
    if (claimed != nullptr) {
        const std::string owner = param(claimed->owner), until = param(claimed->until);
        status = "'running'";
        started = fmt::format("CAST({} AS BIGINT)", at);
        worker = owner;
        due = until;
        lease = fmt::format("{}, CAST({} AS BIGINT), 1", owner, until);
    }
    return fmt::format(
        "{0}, v{8} (id, workflow_id, version, priority, parent_run_id, parent_step_key) AS "
        "(VALUES {1}), "
        "r{8} AS (INSERT INTO runs (id, workflow_id, version, event_id, status, attempt, "
        "created_at, updated_at, started_at, worker, parent_run_id, parent_step_key) "
        "SELECT v{8}.id, v{8}.workflow_id, v{8}.version, e{8}.id, {3}, 0, CAST({2} AS BIGINT), "
        "CAST({2} AS BIGINT), {4}, {5}, v{8}.parent_run_id, v{8}.parent_step_key FROM v{8}, e{8} "
        "RETURNING id), "
        "q{8} AS (INSERT INTO queue (run_id, due_at, priority, lease_owner, lease_until, "
        "lease_epoch) SELECT r{8}.id, CAST({6} AS BIGINT), v{8}.priority, {7} FROM r{8} JOIN "
        "v{8} ON v{8}.id = r{8}.id)",
        e, rows, at, status, started, worker, due, lease, s);
}

// A Postgres array literal ({"a","b",NULL}) of `values`, for a parameter the statement
// casts to an array type: every element quoted, with `"` and `\` escaped.
std::string pg_array(const std::vector<Value>& values) {
    std::size_t size = 2;  // room for the texts unescaped, numbers at 20 digits
    for (const Value& v : values) {
        const auto* str = std::get_if<std::string>(&v);
        size += (str != nullptr ? str->size() : 20) + 3;
    }
    std::string out;
    out.reserve(size);
    out += '{';
    // Appends `text` quoted, escaping `"` and `\`: between them, whole runs at a time (a
    // batch's arrays carry every id, key and output of its records).
    const auto quoted = [&out](std::string_view text) {
        out += '"';
        std::size_t quote = text.find('"'), backslash = text.find('\\');
        for (std::size_t from = 0;;) {
            const std::size_t special = std::min(quote, backslash);
            out.append(text.substr(from, special - from));
            if (special == std::string_view::npos) break;
            out += '\\';
            out += text[special];
            from = special + 1;
            (special == quote ? quote : backslash) = text.find(text[special], from);
        }
        out += '"';
    };
    for (const Value& v : values) {
        if (out.size() > 1) out += ',';
        if (std::holds_alternative<std::monostate>(v)) {
            out += "NULL";
        } else if (const auto* str = std::get_if<std::string>(&v)) {
            quoted(*str);
        } else if (const auto* i = std::get_if<std::int64_t>(&v)) {
            quoted(std::to_string(*i));
        } else if (const auto* d = std::get_if<double>(&v)) {
            quoted(fmt::format("{}", *d));
        } else {
            quoted(std::get<bool>(v) ? "true" : "false");
        }
    }
    out += '}';
    return out;
}

// The column names of `row` and the placeholders of its values, which go to `param`.
std::pair<std::string, std::string> insert_lists(const RowInsert& row, Params& param) {
    std::string names, values;
    for (const auto& [name, value] : row.columns) {
        if (!names.empty()) {
            names += ", ";
            values += ", ";
        }
        names += name;
        values += param(value);
    }
    return {std::move(names), std::move(values)};
}

}  // namespace

namespace {

// What claim_runs would read back for a run written claimed at `now`.
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

// The claims of an inserted event's runs written claimed, if they were.
void add_claims(ClaimedBy* claimed, const NewEvent& event, const InsertedEvent& ins,
                std::span<const NewRun> runs, std::int64_t now) {
    if (claimed == nullptr) return;
    for (std::size_t i = 0; i < runs.size(); ++i) {
        claimed->claims.push_back(claimed_run(event, ins.event_id, runs[i], ins.run_ids[i], now,
                                              claimed->owner, claimed->until));
    }
}

}  // namespace

InsertedEvent RunStore::insert_event(Transaction& tx, const NewEvent& event,
                                     std::span<const NewRun> runs, std::int64_t now,
                                     ClaimedBy* claimed) {
    if (event.name.empty()) throw std::invalid_argument("event name must not be empty");
    InsertedEvent out;
    out.event_id = event.id.value_or(new_id_at(now));
    std::vector<std::string> run_ids;
    for (std::size_t i = 0; i < runs.size(); ++i) run_ids.push_back(new_id_at(now));
    Result inserted;
    if (tx.backend() == Backend::postgres && !runs.empty()) {
        // One statement (one round trip) for the event, its runs and their queue items;
        // the runs exist only if the event was new.
        Params param;
        const std::string sql =
            "WITH " + event_ctes(param, event, out.event_id, runs, run_ids, now, "", claimed, "") +
            " SELECT e.id FROM e";
        inserted = tx.exec_values(sql, param.values);
        if (!inserted.empty()) {
            out.run_ids = std::move(run_ids);
            add_claims(claimed, event, out, runs, now);
            return out;
        }
    } else {
        inserted = tx.exec(
            "INSERT INTO events (id, name, data, ts, idempotency_key, received_at) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING RETURNING id",
            out.event_id, event.name, event.data, event.ts.value_or(now), event.idempotency_key,
            now);
    }

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

    for (std::size_t i = 0; i < runs.size(); ++i) {
        const NewRun& run = runs[i];
        std::string& run_id = run_ids[i];
        if (claimed == nullptr) {
            tx.exec(
                "INSERT INTO runs (id, workflow_id, version, event_id, status, attempt, "
                "created_at, updated_at, parent_run_id, parent_step_key) "
                "VALUES ($1, $2, $3, $4, $5, 0, $6, $6, $7, $8)",
                run_id, run.workflow_id, run.version, out.event_id, run_status::kQueued, now,
                run.parent_run_id, run.parent_step_key);
            tx.exec("INSERT INTO queue (run_id, due_at, priority) VALUES ($1, $2, $3)", run_id, now,
                    run.priority);
        } else {
            // As a claim leaves it: running, its item leased (epoch 1).
            tx.exec(
                "INSERT INTO runs (id, workflow_id, version, event_id, status, attempt, "
                "created_at, updated_at, started_at, worker, parent_run_id, parent_step_key) "
                "VALUES ($1, $2, $3, $4, $5, 0, $6, $6, $6, $7, $8, $9)",
                run_id, run.workflow_id, run.version, out.event_id, run_status::kRunning, now,
                claimed->owner, run.parent_run_id, run.parent_step_key);
            tx.exec(
                "INSERT INTO queue (run_id, due_at, priority, lease_owner, lease_until, "
                "lease_epoch) VALUES ($1, $2, $3, $4, $2, 1)",
                run_id, claimed->until, run.priority, claimed->owner);
            claimed->claims.push_back(
                claimed_run(event, out.event_id, run, run_id, now, claimed->owner, claimed->until));
        }
        out.run_ids.push_back(std::move(run_id));
    }
    return out;
}

InsertedEvent RunStore::insert_event(const NewEvent& event, std::span<const NewRun> runs,
                                     std::int64_t now) {
    return db_.transact([&](Transaction& tx) { return insert_event(tx, event, runs, now); });
}

std::optional<InsertedEvent> RunStore::insert_event_alone(const NewEvent& event,
                                                          std::span<const NewRun> runs,
                                                          std::int64_t now, const Riders& riders,
                                                          const OnlyIf& only_if,
                                                          ClaimedBy* claimed) {
    AloneWrite w{
        &event,  runs,        now, riders ? &riders : nullptr, only_if ? &only_if : nullptr,
        claimed, std::nullopt};
    AloneWrite* const one[] = {&w};
    insert_events_alone(one);
    return std::move(w.inserted);
}

namespace {

// The columns of a batch of events and of their runs, one array each, unnested into rows
// by kEventRowsSql and kRunRowsSql ($1-$6 the events', $7-$15 the runs').
struct EventColumns {
    std::array<std::vector<Value>, 6> ev;   // id, name, data, ts, idempotency_key, received_at
    std::array<std::vector<Value>, 9> run;  // id, event_id, workflow_id, version, priority,
                                            // parent_run_id, parent_step_key, lease_owner,
                                            // lease_until
    void add(const NewEvent& e, const InsertedEvent& ids, std::span<const NewRun> runs,
             std::int64_t now, const ClaimedBy* claimed) {
        std::array<Value, 6> row{to_value(ids.event_id),
                                 to_value(e.name),
                                 to_value(e.data),
                                 to_value(e.ts.value_or(now)),
                                 to_value(e.idempotency_key),
                                 to_value(now)};
        for (std::size_t i = 0; i < row.size(); ++i) ev[i].push_back(std::move(row[i]));
        for (std::size_t r = 0; r < runs.size(); ++r) {
            std::array<Value, 9> rrow{to_value(ids.run_ids.at(r)),
                                      to_value(ids.event_id),
                                      to_value(runs[r].workflow_id),
                                      to_value(runs[r].version),
                                      to_value(runs[r].priority),
                                      to_value(runs[r].parent_run_id),
                                      to_value(runs[r].parent_step_key),
                                      claimed ? to_value(claimed->owner) : Value{},
                                      claimed ? to_value(claimed->until) : Value{}};
            for (std::size_t i = 0; i < rrow.size(); ++i) run[i].push_back(std::move(rrow[i]));
        }
    }
    std::vector<Value> params() const {
        std::vector<Value> out;
        for (const auto& col : ev) out.emplace_back(pg_array(col));
        for (const auto& col : run) out.emplace_back(pg_array(col));
        return out;
    }
};

// The event rows ($1-$6, and what the caller adds) as `ve`, and the first part of the
// event insert `e`: the caller ends it (more of its WHERE, then kEventInsertEnd).
constexpr std::string_view kEventRowsSql =
    "ve AS (SELECT * FROM unnest(CAST($1 AS TEXT[]), CAST($2 AS TEXT[]), CAST($3 AS TEXT[]), "
    "CAST($4 AS BIGINT[]), CAST($5 AS TEXT[]), CAST($6 AS BIGINT[]){}) AS ve (id, name, data, "
    "ts, idempotency_key, received_at{})), "
    "e AS (INSERT INTO events (id, name, data, ts, idempotency_key, received_at) "
    "SELECT id, name, data, ts, idempotency_key, received_at FROM ve "
    "WHERE NOT EXISTS (SELECT 1 FROM waits WHERE waits.event_name = ve.name)";
// ON CONFLICT DO NOTHING also skips a row that conflicts with one inserted earlier by the
// same statement; the runs and queue items follow the events actually inserted.
constexpr std::string_view kEventInsertEnd = " ON CONFLICT DO NOTHING RETURNING id, received_at)";
// The runs ($7-$15) of the events `e` inserted, and their queue items.
constexpr std::string_view kRunRowsSql =
    "vr AS (SELECT * FROM unnest(CAST($7 AS TEXT[]), CAST($8 AS TEXT[]), "
    "CAST($9 AS TEXT[]), CAST($10 AS TEXT[]), CAST($11 AS BIGINT[]), CAST($12 AS TEXT[]), "
    "CAST($13 AS TEXT[]), CAST($14 AS TEXT[]), CAST($15 AS BIGINT[])) AS vr (id, "
    "event_id, workflow_id, version, priority, parent_run_id, parent_step_key, "
    "lease_owner, lease_until)), "
    // A claimed run starts as a claim leaves it: running, its item leased (epoch 1).
    "r AS (INSERT INTO runs (id, workflow_id, version, event_id, status, attempt, "
    "created_at, updated_at, started_at, worker, parent_run_id, parent_step_key) "
    "SELECT vr.id, vr.workflow_id, vr.version, e.id, CASE WHEN vr.lease_owner IS NULL "
    "THEN 'queued' ELSE 'running' END, 0, e.received_at, e.received_at, CASE WHEN "
    "vr.lease_owner IS NULL THEN NULL ELSE e.received_at END, vr.lease_owner, "
    "vr.parent_run_id, vr.parent_step_key FROM vr JOIN e ON e.id = vr.event_id "
    "RETURNING id, created_at), "
    "q AS (INSERT INTO queue (run_id, due_at, priority, lease_owner, lease_until, "
    "lease_epoch) SELECT r.id, COALESCE(vr.lease_until, r.created_at), vr.priority, "
    "vr.lease_owner, vr.lease_until, CASE WHEN vr.lease_owner IS NULL THEN 0 ELSE 1 END "
    "FROM r JOIN vr ON vr.id = r.id)";

// The array type of a value's kind (NULL has none), for a condition's arguments.
std::optional<std::string_view> array_type(const Value& v) {
    if (std::holds_alternative<std::int64_t>(v)) return "BIGINT[]";
    if (std::holds_alternative<double>(v)) return "DOUBLE PRECISION[]";
    if (std::holds_alternative<bool>(v)) return "BOOLEAN[]";
    if (std::holds_alternative<std::string>(v)) return "TEXT[]";
    return std::nullopt;
}

}  // namespace

struct RunStore::ColumnTypes {
    std::mutex mu;
    std::unordered_map<std::string,
                       std::shared_ptr<const std::unordered_map<std::string, std::string>>>
        tables;
};

RunStore::RunStore(Database& db) : db_(db), types_(std::make_shared<ColumnTypes>()) {}

std::shared_ptr<const std::unordered_map<std::string, std::string>> RunStore::column_types(
    const std::string& table) {
    {
        std::lock_guard lock(types_->mu);
        if (auto it = types_->tables.find(table); it != types_->tables.end()) return it->second;
    }
    auto types = std::make_shared<std::unordered_map<std::string, std::string>>();
    for (auto row : db_.read("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                             "WHERE attrelid = CAST($1 AS regclass) AND attnum > 0 "
                             "AND NOT attisdropped",
                             table))
        (*types)[row.get<std::string>(0)] = row.get<std::string>(1);
    std::lock_guard lock(types_->mu);
    return types_->tables.emplace(table, std::move(types)).first->second;
}

// Every write's event and runs go in the arrays of insert_events' statement, numbered k
// (the last column of `ve`); the writes' condition, read once per write from arrays of
// its arguments (`cairn_if`), keeps out the events of those it yields no row for; each
// table the riders write is one insert more, from arrays, of the rows whose event went
// in. The text depends on the condition's and the riders' shapes only, so it is one
// prepared statement for every batch size, and Postgres's work grows with the rows alone
// (a CTE per write costs an executor node each, more than linearly in their number:
// docs/performance.md, section 28).
bool RunStore::insert_events_alone_rows(std::span<AloneWrite* const> writes) {
    struct Sent {
        AloneWrite* write;
        InsertedEvent ids;
    };
    struct Table {  // one table's rider rows: k, then each column
        std::string name;
        std::vector<std::string> columns;
        std::vector<std::vector<Value>> values;
    };
    std::vector<Sent> sent;
    EventColumns cols;
    std::vector<Value> ks;
    std::optional<bool> conditioned;
    std::string condition;
    std::vector<std::vector<Value>> arguments;  // the condition's, each across the writes
    std::vector<Table> tables;
    for (AloneWrite* w : writes) {
        if (w->runs.empty()) continue;
        const auto k = static_cast<std::int64_t>(sent.size());
        const bool has_condition = w->only_if != nullptr;
        if (conditioned.value_or(has_condition) != has_condition) return false;
        conditioned = has_condition;
        if (has_condition) {
            Params args;
            args.columns = "cairn_if.a";
            std::string text = (*w->only_if)(args);
            if (k == 0) {
                condition = std::move(text);
                arguments.resize(args.values.size());
            } else if (text != condition || args.values.size() != arguments.size()) {
                return false;
            }
            for (std::size_t i = 0; i < arguments.size(); ++i)
                arguments[i].push_back(std::move(args.values[i]));
        }
        InsertedEvent ids;
        ids.event_id = w->event->id.value_or(new_id_at(w->now));
        for (std::size_t i = 0; i < w->runs.size(); ++i) ids.run_ids.push_back(new_id_at(w->now));
        cols.add(*w->event, ids, w->runs, w->now, w->claimed);
        ks.emplace_back(k);
        const std::vector<RowInsert> rows =
            w->riders != nullptr ? (*w->riders)(ids) : std::vector<RowInsert>{};
        for (const RowInsert& row : rows) {
            auto table = std::find_if(tables.begin(), tables.end(), [&row](const Table& t) {
                return t.name == row.table &&
                       std::equal(t.columns.begin(), t.columns.end(), row.columns.begin(),
                                  row.columns.end(), [](const std::string& name, const auto& c) {
                                      return name == c.first;
                                  });
            });
            if (table == tables.end()) {
                table = tables.insert(tables.end(), Table{row.table, {}, {}});
                for (const auto& column : row.columns) table->columns.push_back(column.first);
                table->values.resize(row.columns.size() + 1);
            }
            table->values[0].emplace_back(k);
            for (std::size_t i = 0; i < row.columns.size(); ++i)
                table->values[i + 1].push_back(row.columns[i].second);
        }
        sent.push_back({w, std::move(ids)});
    }
    if (sent.empty()) return true;

    std::vector<Value> params = cols.params();
    params.emplace_back(pg_array(ks));  // $16
    const auto array = [&params](const std::vector<Value>& values, std::string_view type) {
        params.emplace_back(pg_array(values));
        return fmt::format("CAST(${} AS {})", params.size(), type);
    };
    std::string sql = "WITH " + fmt::format(kEventRowsSql, ", CAST($16 AS BIGINT[])", ", k");
    if (*conditioned) {
        // An argument's array type is its values' (NULL is of any); values of two kinds in
        // one argument are not for this form.
        std::string unnest = "unnest(CAST($16 AS BIGINT[])", names = "k";
        for (std::size_t i = 0; i < arguments.size(); ++i) {
            std::optional<std::string_view> type;
            for (const Value& v : arguments[i]) {
                const auto kind = array_type(v);
                if (kind && type && *kind != *type) return false;
                if (kind) type = kind;
            }
            unnest += ", " + array(arguments[i], type.value_or("TEXT[]"));
            names += fmt::format(", a{}", i);
        }
        sql += fmt::format(
            " AND ve.k IN (SELECT cairn_if.k FROM {}) AS cairn_if ({}) "
            "WHERE EXISTS ({}))",
            unnest, names, condition);
    }
    sql += fmt::format("{}, {}, ek AS (SELECT ve.k FROM ve JOIN e ON e.id = ve.id)",
                       kEventInsertEnd, kRunRowsSql);
    for (std::size_t t = 0; t < tables.size(); ++t) {
        const Table& table = tables[t];
        // Each column's array of the column's own type, as a row's parameters take theirs.
        const auto types = column_types(table.name);
        std::string unnest = "unnest(" + array(table.values[0], "BIGINT[]"), names = "k", selected;
        for (std::size_t i = 0; i < table.columns.size(); ++i) {
            // Not a plain column name, or an array column (unnest would flatten it): the
            // other form.
            const auto type = types->find(table.columns[i]);
            if (type == types->end() || type->second.ends_with("]")) return false;
            unnest += ", " + array(table.values[i + 1], type->second + "[]");
            names += fmt::format(", c{}", i);
            selected += fmt::format("{}x.c{}", i == 0 ? "" : ", ", i);
        }
        sql += fmt::format(
            ", x{} AS (INSERT INTO {} ({}) SELECT {} FROM {}) AS x ({}) "
            "JOIN ek ON ek.k = x.k)",
            t, table.name, fmt::join(table.columns, ", "), selected, unnest, names);
    }
    sql += " SELECT k FROM ek";
    for (auto row : db_.exec_once(Access::read_write, sql, params)) {
        auto& [w, ids] = sent.at(static_cast<std::size_t>(row.get<std::int64_t>(0)));
        add_claims(w->claimed, *w->event, ids, w->runs, w->now);
        w->inserted = std::move(ids);
    }
    return true;
}

void RunStore::insert_events_alone(std::span<AloneWrite* const> writes) {
    for (AloneWrite* w : writes) {
        if (w->event->name.empty()) throw std::invalid_argument("event name must not be empty");
        w->inserted.reset();
    }
    if (db_.backend() != Backend::postgres) return;
    if (writes.size() > 1 && insert_events_alone_rows(writes)) return;
    // Each write's CTEs, numbered k: w{k} (a run waits for its name), g{k} (its condition),
    // then the event's (event_ctes) and its riders', each rider inserted only with its
    // event (`FROM e{k}`). Postgres takes the type of each parameter from its column.
    Params param;
    std::string ctes, written;
    std::vector<std::pair<AloneWrite*, InsertedEvent>> sent;
    for (AloneWrite* w : writes) {
        if (w->runs.empty()) continue;
        const std::size_t k = sent.size();
        InsertedEvent ids;
        ids.event_id = w->event->id.value_or(new_id_at(w->now));
        for (std::size_t i = 0; i < w->runs.size(); ++i) ids.run_ids.push_back(new_id_at(w->now));
        if (!ctes.empty()) ctes += ", ";
        ctes += fmt::format("w{} AS (SELECT 1 FROM waits WHERE event_name = {} LIMIT 1), ", k,
                            param(w->event->name));
        std::string guard = fmt::format("WHERE NOT EXISTS (SELECT 1 FROM w{})", k);
        if (w->only_if != nullptr) {
            // Read in the statement's snapshot, as the waits are.
            ctes += fmt::format("g{} AS ({}), ", k, (*w->only_if)(param));
            guard += fmt::format(" AND EXISTS (SELECT 1 FROM g{})", k);
        }
        ctes += event_ctes(param, *w->event, ids.event_id, w->runs, ids.run_ids, w->now, guard,
                           w->claimed, std::to_string(k));
        const std::vector<RowInsert> rows =
            w->riders != nullptr ? (*w->riders)(ids) : std::vector<RowInsert>{};
        for (std::size_t i = 0; i < rows.size(); ++i) {
            const auto [names, values] = insert_lists(rows[i], param);
            ctes += fmt::format(", x{}_{} AS (INSERT INTO {} ({}) SELECT {} FROM e{})", k, i,
                                rows[i].table, names, values, k);
        }
        written += fmt::format("{}SELECT CAST({} AS BIGINT) FROM e{}",
                               written.empty() ? "" : " UNION ALL ", k, k);
        sent.emplace_back(w, std::move(ids));
    }
    if (sent.empty()) return;
    const std::string sql = "WITH " + ctes + " " + written;
    for (auto row : db_.exec_once(Access::read_write, sql, param.values)) {
        auto& [w, ids] = sent.at(static_cast<std::size_t>(row.get<std::int64_t>(0)));
        add_claims(w->claimed, *w->event, ids, w->runs, w->now);
        w->inserted = std::move(ids);
    }
}

void RunStore::insert_events(std::span<EventWrite* const> events) {
    if (events.empty()) return;
    if (db_.backend() != Backend::postgres)
        throw std::logic_error("RunStore::insert_events is for Postgres only");
    // One array per column, unnested into rows, so the text is the same for every batch
    // (prepared once per connection, as run_writes_postgres's).
    EventColumns cols;
    // An id or idempotency key given twice: only its first event goes in the statement
    // (the runs follow their event by id, so a second event of one id must not be there).
    std::unordered_set<std::string> ids, keys;
    std::vector<EventWrite*> sent;
    for (EventWrite* w : events) {
        const NewEvent& e = *w->event;
        if (e.name.empty()) throw std::invalid_argument("event name must not be empty");
        w->written = false;
        w->inserted = InsertedEvent{e.id.value_or(new_id_at(w->now)), {}, false};
        if (w->claimed) w->claimed->claims.clear();
        if (!ids.insert(w->inserted.event_id).second ||
            (e.idempotency_key && !keys.insert(*e.idempotency_key).second))
            continue;
        sent.push_back(w);
        for (std::size_t r = 0; r < w->runs.size(); ++r)
            w->inserted.run_ids.push_back(new_id_at(w->now));
        cols.add(e, w->inserted, w->runs, w->now, w->claimed ? &*w->claimed : nullptr);
    }
    const std::vector<Value> params = cols.params();
    static const std::string kSql =
        fmt::format("WITH {}{}, {} SELECT id FROM e", fmt::format(kEventRowsSql, "", ""),
                    kEventInsertEnd, kRunRowsSql);
    std::unordered_set<std::string> written;
    for (auto row : db_.exec_once(Access::read_write, kSql, params))
        written.insert(row.get<std::string>(0));
    for (EventWrite* w : sent) {
        w->written = written.contains(w->inserted.event_id);
        if (!w->written) {
            w->inserted.run_ids.clear();
            continue;
        }
        if (w->claimed) add_claims(&*w->claimed, *w->event, w->inserted, w->runs, w->now);
    }
}

void RunStore::insert_rows(Transaction& tx, std::span<const RowInsert> rows) {
    for (const RowInsert& row : rows) {
        Params param;
        const auto [names, values] = insert_lists(row, param);
        tx.exec_values(fmt::format("INSERT INTO {} ({}) VALUES ({})", row.table, names, values),
                       param.values);
    }
}

bool RunStore::holds(Transaction& tx, const OnlyIf& only_if) {
    Params param;
    const std::string sql = only_if(param);
    return !tx.exec_values(sql, param.values).empty();
}

std::vector<Lease> RunStore::claim(std::string_view owner, int limit, std::int64_t now,
                                   std::int64_t lease_ms) {
    std::vector<Lease> out;
    for (auto& c : claim_runs(owner, limit, now, lease_ms)) out.push_back(std::move(c.lease));
    return out;
}

namespace {

// Executes one statement: `write` the claim's, `read` the state read's.
using Exec = std::function<Result(const std::string&, std::span<const Value>)>;

std::vector<Claim> claim_with(Backend backend, const Exec& write, const Exec& read,
                              std::string_view owner, int limit, std::int64_t now,
                              std::int64_t lease_ms) {
    if (limit <= 0) return {};
    const std::int64_t until = now + lease_ms;
    // The claimed runs turn `running` in the same commit, so starting an execution costs
    // no write of its own, and one more statement reads what an execution needs of all
    // the claimed runs that have no steps yet, so starting one costs no reads either.
    // Postgres claims in one statement, the function cairn_claim (migration 4); SQLite (no
    // UPDATE inside WITH) in one transaction, which costs no round trips there and needs no
    // SKIP LOCKED (BEGIN IMMEDIATE already serialises writers): the statements below.
    static const std::string kTake =
        "UPDATE queue SET lease_owner = $1, lease_until = $2, due_at = $2, lease_epoch = "
        "lease_epoch + 1 "
        "WHERE run_id IN (SELECT run_id FROM queue WHERE due_at <= $3 "
        "ORDER BY priority DESC, due_at, run_id LIMIT $4) "
        "RETURNING run_id, lease_epoch";
    static const std::string kClaimFunction =
        "SELECT claimed_run, claimed_epoch FROM cairn_claim($1, $2, $3, $4)";
    const Value take[] = {to_value(owner), to_value(until), to_value(now), to_value(limit)};
    std::vector<Claim> out;
    for (auto row : write(backend == Backend::postgres ? kClaimFunction : kTake, take)) {
        out.push_back(Claim{
            Lease{row.get<std::string>(0), std::string(owner), row.get<std::int64_t>(1), until},
            std::nullopt});
    }
    if (out.empty()) return out;
    Params param;
    std::string ids;
    for (const Claim& c : out)
        ids += fmt::format("{}{}", ids.empty() ? "" : ", ", param(c.lease.run_id));
    if (backend == Backend::sqlite) {
        std::vector<Value> start = param.values;  // the ids, $1..$n, then owner and now
        const std::size_t n = start.size();
        start.push_back(to_value(owner));
        start.push_back(to_value(now));
        write(fmt::format("UPDATE runs SET status = 'running', worker = ${}, updated_at = ${}, "
                          "started_at = COALESCE(started_at, ${}) WHERE id IN ({}) "
                          "AND status NOT IN ('completed', 'failed', 'cancelled')",
                          n + 1, n + 2, n + 2, ids),
              start);
    }
    // The state of every claimed run. Only runs without steps keep theirs, whose row's
    // updated_at is their updated_at (run_columns).
    const std::string sql = fmt::format(
        "SELECT {}, r.updated_at, {} FROM runs r JOIN events e ON e.id = r.event_id "
        "WHERE r.id IN ({})",
        kRunColumnsButUpdated, kStateExtraColumns, ids);
    for (auto row : read(sql, param.values)) {
        if (!row.get<bool>(kFreshColumn)) continue;  // has steps: the worker loads it
        const auto id = row.get<std::string>(0);
        for (Claim& c : out) {
            if (c.lease.run_id == id) c.state = read_state(row);
        }
    }
    return out;
}

}  // namespace

std::vector<Claim> RunStore::claim_runs(std::string_view owner, int limit, std::int64_t now,
                                        std::int64_t lease_ms) {
    if (limit <= 0) return {};
    if (db_.backend() == Backend::postgres) {
        // Each statement in autocommit: the claim commits on its own, the read needs none.
        auto in = [this](Access access) {
            return [this, access](const std::string& q, std::span<const Value> params) {
                return db_.exec_once(access, q, params);
            };
        };
        return claim_with(Backend::postgres, in(Access::read_write), in(Access::read_only), owner,
                          limit, now, lease_ms);
    }
    std::vector<Claim> out;
    db_.transact([&](Transaction& tx) { out = claim_runs(tx, owner, limit, now, lease_ms); });
    return out;
}

std::vector<Claim> RunStore::claim_runs(Transaction& tx, std::string_view owner, int limit,
                                        std::int64_t now, std::int64_t lease_ms) {
    const Exec in_tx = [&tx](const std::string& q, std::span<const Value> params) {
        return tx.exec_values(q, params);
    };
    return claim_with(tx.backend(), in_tx, in_tx, owner, limit, now, lease_ms);
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

namespace {

// When a step's write changed it (steps.changed_at, which the change feed follows).
std::int64_t changed_at(const StepRecord& step) {
    return step.ended_at.value_or(step.started_at.value_or(0));
}

}  // namespace

void RunStore::write_step(Transaction& tx, const StepRecord& step) {
    // A completed step is final: a second write of the same key changes nothing.
    tx.exec(
        "INSERT INTO steps (run_id, step_key, seq, kind, status, output, error, attempts, "
        "started_at, ended_at, wake_at, changed_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) "
        "ON CONFLICT (run_id, step_key) DO UPDATE SET seq = excluded.seq, kind = excluded.kind, "
        "status = excluded.status, output = excluded.output, error = excluded.error, "
        "attempts = excluded.attempts, started_at = COALESCE(steps.started_at, "
        "excluded.started_at), "
        "ended_at = excluded.ended_at, wake_at = excluded.wake_at, changed_at = "
        "excluded.changed_at "
        "WHERE steps.status <> 'completed'",
        step.run_id, step.key, step.seq, step.kind, step.status, step.output, step.error,
        step.attempts, step.started_at, step.ended_at, step.wake_at, changed_at(step));
}

namespace {

void reset(std::span<RunWrite* const> writes) {
    for (RunWrite* w : writes) {
        w->held = false;
        w->run_status.clear();
    }
}

// The time of a write: its run's end, or its step's change.
std::int64_t touched_at(const RunWrite& w) {
    if (w.end) return w.end->at;
    return changed_at(*w.step);
}

// SQLite: the text of a statement whose shape depends only on how many rows it carries,
// made once per count and kept; its parameters are numbered $1.. in row order. Formatting
// the batch statements anew for every batch was a share of the writer thread's time
// (docs/performance.md, section 19).
class TextByCount {
  public:
    explicit TextByCount(std::string (*make)(std::size_t)) : make_(make) {}
    const std::string& operator()(std::size_t n) {
        std::lock_guard lock(mu_);
        if (texts_.size() <= n) texts_.resize(n + 1);
        if (!texts_[n]) texts_[n] = std::make_unique<std::string>(make_(n));
        return *texts_[n];
    }

  private:
    std::string (*make_)(std::size_t);
    std::mutex mu_;
    std::vector<std::unique_ptr<std::string>> texts_;
};

// "$first, $first+step, ..." for `count` placeholders.
std::string placeholders(std::size_t count, std::size_t first = 1, std::size_t step = 1) {
    std::string out;
    for (std::size_t i = 0; i < count; ++i)
        out += fmt::format("{}${}", i ? ", " : "", first + i * step);
    return out;
}

// "($1, ..., $width), ($width+1, ...), ..." for `rows` rows.
std::string placeholder_rows(std::size_t rows, std::size_t width) {
    std::string out;
    for (std::size_t r = 0; r < rows; ++r)
        out += fmt::format("{}({})", r ? ", " : "", placeholders(width, 1 + r * width));
    return out;
}

// " WHEN $key THEN $value ..." for `count` pairs: the keys from `key`, the values from
// `value`, each advancing by its step.
std::string when_cases(std::size_t count, std::size_t key, std::size_t key_step, std::size_t value,
                       std::size_t value_step) {
    std::string out;
    for (std::size_t i = 0; i < count; ++i)
        out += fmt::format(" WHEN ${} THEN ${}", key + i * key_step, value + i * value_step);
    return out;
}

constexpr std::string_view kStepColumnList =
    "run_id, step_key, seq, kind, status, output, error, attempts, started_at, ended_at, wake_at, "
    "changed_at, attempt_generation, attempt_worker, attempt_logs";
constexpr std::string_view kAttemptColumnList =
    "run_id, step_key, generation, attempt, started_at, ended_at, outcome, error, logs, worker";
// A completed step is final: a second write of the same key changes nothing.
constexpr std::string_view kStepUpsert =
    "ON CONFLICT (run_id, step_key) DO UPDATE SET seq = excluded.seq, kind = excluded.kind, "
    "status = excluded.status, output = excluded.output, error = excluded.error, "
    "attempts = excluded.attempts, started_at = COALESCE(steps.started_at, excluded.started_at), "
    "ended_at = excluded.ended_at, wake_at = excluded.wake_at, changed_at = excluded.changed_at, "
    "attempt_generation = excluded.attempt_generation, attempt_worker = excluded.attempt_worker, "
    "attempt_logs = excluded.attempt_logs "
    "WHERE steps.status <> 'completed'";

// Whether the write's attempt goes in its step's row (engine 5): the first attempt, and
// it completed the step. Every other attempt is a row of step_attempts.
bool attempt_in_step(const RunWrite& w) {
    return w.step != nullptr && w.attempt != nullptr && w.attempt->attempt == 1 &&
           w.attempt->outcome == "completed" && w.step->status == "completed" &&
           w.attempt->step_key == w.step->key;
}

// Postgres: the fence and every write in one statement (data-modifying WITH), so a batch
// costs one round trip, and none extra for BEGIN/COMMIT when sent on its own. The batch
// is passed as one array per column, unnested into the rows of `v` (NULL for the parts a
// write lacks), so the statement's text is the same for every batch size: each
// connection prepares it once and Postgres plans it a few times, then reuses a generic
// plan, instead of planning and keeping one statement per batch size.
// Only the runs that end are written; a run that goes on is read for its status (as of the
// statement's start), which is how its worker learns of a cancellation. Returns (run id,
// status) of each run whose lease held.
std::pair<std::string_view, std::vector<Value>> run_writes_postgres(
    std::span<RunWrite* const> writes) {
    static const StepRecord kNoStep;
    static const AttemptRecord kNoAttempt;
    static const RunEnd kNoEnd;
    // name and element type of each column of `v`, in order
    static constexpr std::array<std::pair<std::string_view, std::string_view>, 30> kColumns{{
        {"run_id", "TEXT"},
        {"owner", "TEXT"},
        {"epoch", "BIGINT"},
        {"touched", "BIGINT"},
        {"fin", "TEXT"},
        {"fout", "TEXT"},
        {"ferr", "TEXT"},
        {"step_key", "TEXT"},
        {"seq", "BIGINT"},
        {"kind", "TEXT"},
        {"status", "TEXT"},
        {"output", "TEXT"},
        {"error", "TEXT"},
        {"attempts", "BIGINT"},
        {"started_at", "BIGINT"},
        {"ended_at", "BIGINT"},
        {"wake_at", "BIGINT"},
        {"changed_at", "BIGINT"},
        {"attempt_generation", "BIGINT"},
        {"attempt_worker", "TEXT"},
        {"attempt_logs", "TEXT"},
        {"a_step_key", "TEXT"},
        {"a_generation", "BIGINT"},
        {"a_attempt", "BIGINT"},
        {"a_started_at", "BIGINT"},
        {"a_ended_at", "BIGINT"},
        {"a_outcome", "TEXT"},
        {"a_error", "TEXT"},
        {"a_logs", "TEXT"},
        {"a_worker", "TEXT"},
    }};
    std::array<std::vector<Value>, kColumns.size()> cols;
    for (const RunWrite* w : writes) {
        const StepRecord& st = w->step ? *w->step : kNoStep;
        const AttemptRecord& a = w->attempt ? *w->attempt : kNoAttempt;
        const RunEnd& end = w->end ? *w->end : kNoEnd;
        const bool in_step = attempt_in_step(*w), in_table = w->attempt && !in_step;
        auto when = [](bool present, const auto& v) { return present ? to_value(v) : Value{}; };
        std::array<Value, kColumns.size()> row{
            to_value(w->lease->run_id),   to_value(w->lease->owner),
            to_value(w->lease->epoch),    to_value(touched_at(*w)),
            when(w->end, end.status),     when(w->end, end.output),
            when(w->end, end.error),      when(w->step, st.key),
            when(w->step, st.seq),        when(w->step, st.kind),
            when(w->step, st.status),     when(w->step, st.output),
            when(w->step, st.error),      when(w->step, st.attempts),
            when(w->step, st.started_at), when(w->step, st.ended_at),
            when(w->step, st.wake_at),    when(w->step, changed_at(st)),
            when(in_step, a.generation),  when(in_step, a.worker),
            when(in_step, a.logs),        when(in_table, a.step_key),
            when(in_table, a.generation), when(in_table, a.attempt),
            when(in_table, a.started_at), when(in_table, a.ended_at),
            when(in_table, a.outcome),    when(in_table, a.error),
            when(in_table, a.logs),       when(in_table, a.worker)};
        for (std::size_t i = 0; i < row.size(); ++i) cols[i].push_back(std::move(row[i]));
    }
    std::vector<Value> params;
    for (const auto& col : cols) params.emplace_back(pg_array(col));
    // $1..$30, one array per column of `v`. The fence locks each run's queue row and
    // checks the lease; an ending run's item is parked in the same update. Every other
    // part writes only for runs the fence kept.
    static const std::string sql = [] {
        std::string arrays, names;
        for (std::size_t i = 0; i < kColumns.size(); ++i) {
            arrays += fmt::format("{}CAST(${} AS {}[])", i ? ", " : "", i + 1, kColumns[i].second);
            names += fmt::format("{}{}", i ? ", " : "", kColumns[i].first);
        }
        return fmt::format(
            "WITH v AS (SELECT * FROM unnest({0}) AS v ({4})), "
            "fence AS (UPDATE queue q SET lease_epoch = q.lease_epoch, "
            "lease_owner = CASE WHEN v.fin IS NULL THEN q.lease_owner END, "
            "lease_until = CASE WHEN v.fin IS NULL THEN q.lease_until END, "
            "due_at = CASE WHEN v.fin IS NULL THEN q.due_at END FROM v "
            "WHERE q.run_id = v.run_id AND q.lease_owner = v.owner AND q.lease_epoch = v.epoch "
            "RETURNING q.run_id), "
            "s AS (INSERT INTO steps ({1}) SELECT {1} FROM v WHERE step_key IS NOT NULL "
            "AND run_id IN (SELECT run_id FROM fence) {2}), "
            "a AS (INSERT INTO step_attempts ({3}) SELECT run_id, a_step_key, a_generation, "
            "a_attempt, a_started_at, a_ended_at, a_outcome, a_error, a_logs, a_worker FROM v "
            "WHERE a_step_key IS NOT NULL AND run_id IN (SELECT run_id FROM fence)), "
            "d AS (DELETE FROM waits WHERE run_id IN "
            "(SELECT run_id FROM v WHERE fin IS NOT NULL AND run_id IN (SELECT run_id FROM "
            "fence))), "
            "r AS (UPDATE runs SET updated_at = v.touched, status = v.fin, output = v.fout, "
            "error = v.ferr, ended_at = v.touched "
            "FROM v WHERE runs.id = v.run_id AND v.fin IS NOT NULL "
            "AND v.run_id IN (SELECT run_id FROM fence) AND runs.status <> 'cancelled' "
            "RETURNING runs.id, runs.status) "
            "SELECT f.run_id, COALESCE(r.status, CASE WHEN v.fin IS NULL THEN ru.status "
            "ELSE 'cancelled' END) FROM fence f JOIN v ON v.run_id = f.run_id "
            "LEFT JOIN r ON r.id = f.run_id LEFT JOIN runs ru ON ru.id = f.run_id",
            arrays, kStepColumnList, kStepUpsert, kAttemptColumnList, names);
    }();
    return {sql, std::move(params)};
}

void apply_statuses(std::span<RunWrite* const> writes, const Result& rows) {
    std::unordered_map<std::string, std::string> statuses;
    for (auto row : rows) statuses.emplace(row.get<std::string>(0), row.get<std::string>(1));
    for (RunWrite* w : writes) {
        if (const auto it = statuses.find(w->lease->run_id); it != statuses.end()) {
            w->held = true;
            w->run_status = it->second;
        }
    }
}

}  // namespace

void RunStore::write_runs(std::span<RunWrite* const> writes) {
    if (writes.empty()) return;
    if (db_.backend() != Backend::postgres) {
        db_.transact([&](Transaction& tx) { write_runs(tx, writes); });
        return;
    }
    reset(writes);
    auto [sql, params] = run_writes_postgres(writes);
    apply_statuses(writes, db_.exec_once(Access::read_write, sql, params));
}

void RunStore::write_runs(Transaction& tx, std::span<RunWrite* const> writes) {
    if (writes.empty()) return;
    reset(writes);
    if (tx.backend() == Backend::postgres) {
        auto [sql, params] = run_writes_postgres(writes);
        apply_statuses(writes, tx.exec_values(sql, params));
        return;
    }
    // SQLite: a statement per table for all the runs (statements cost no round trips
    // here, and WITH cannot hold an UPDATE). Each statement's text depends only on how
    // many rows it carries; the values go in row order.
    static TextByCount fence_sql([](std::size_t n) {
        return fmt::format(
            "SELECT q.run_id, q.lease_owner, q.lease_epoch, r.status FROM queue q JOIN runs r "
            "ON r.id = q.run_id WHERE q.run_id IN ({})",
            placeholders(n));
    });
    static TextByCount steps_sql([](std::size_t n) {
        return fmt::format("INSERT INTO steps ({}) VALUES {} {}", kStepColumnList,
                           placeholder_rows(n, 15), kStepUpsert);
    });
    static TextByCount attempts_sql([](std::size_t n) {
        return fmt::format("INSERT INTO step_attempts ({}) VALUES {}", kAttemptColumnList,
                           placeholder_rows(n, 10));
    });
    // n ids, then (status, output, error, ended at) for each
    static TextByCount end_sql([](std::size_t n) {
        const auto cases = [n](std::size_t column) { return when_cases(n, 1, 1, n + column, 4); };
        return fmt::format(
            "UPDATE runs SET status = CASE id{} END, output = CASE id{} END, "
            "error = CASE id{} END, ended_at = CASE id{} END, updated_at = CASE id{} END "
            "WHERE id IN ({}) AND status <> 'cancelled'",
            cases(1), cases(2), cases(3), cases(4), cases(4), placeholders(n));
    });
    static TextByCount unwait_sql([](std::size_t n) {
        return fmt::format("DELETE FROM waits WHERE run_id IN ({})", placeholders(n));
    });
    static TextByCount park_sql([](std::size_t n) {
        return fmt::format(
            "UPDATE queue SET lease_owner = NULL, lease_until = NULL, due_at = NULL "
            "WHERE run_id IN ({})",
            placeholders(n));
    });
    std::vector<Value> values;
    auto push = [&values](const auto&... v) { (values.push_back(to_value(v)), ...); };
    auto run = [&](const std::string& sql) {
        auto r = tx.exec_values(sql, values);
        values.clear();
        return r;
    };

    // The fence of every run at once: keep the writes whose lease holds. A read suffices:
    // the batch's transaction began IMMEDIATE, so no other writer can move a lease (or
    // cancel a run) before it commits (Postgres needs the row locks of its UPDATE instead).
    // The same read gives each run's status, which is how a worker learns of a
    // cancellation; only the runs that end are written (engine 6).
    for (const RunWrite* w : writes) push(w->lease->run_id);
    // Each row read once into a map (a batch carries tens of runs: matching rows to writes
    // pairwise built a string per comparison).
    struct Fence {
        std::optional<std::string> owner;
        std::int64_t epoch = 0;
        std::string status;
    };
    std::unordered_map<std::string, Fence> leases;
    for (auto row : run(fence_sql(writes.size()))) {
        leases.emplace(
            row.get<std::string>(0),
            Fence{row.get_opt<std::string>(1), row.get<std::int64_t>(2), row.get<std::string>(3)});
    }
    std::vector<RunWrite*> held;
    for (RunWrite* w : writes) {
        const auto it = leases.find(w->lease->run_id);
        if (it != leases.end() && it->second.owner == w->lease->owner &&
            it->second.epoch == w->lease->epoch) {
            w->held = true;
            w->run_status = it->second.status;
            held.push_back(w);
        }
    }
    if (held.empty()) return;

    std::size_t n = 0;
    for (const RunWrite* w : held) {
        if (w->step == nullptr) continue;
        const StepRecord& st = *w->step;
        push(st.run_id, st.key, st.seq, st.kind, st.status, st.output, st.error, st.attempts,
             st.started_at, st.ended_at, st.wake_at, changed_at(st));
        if (attempt_in_step(*w)) {
            push(w->attempt->generation, w->attempt->worker, w->attempt->logs);
        } else {
            values.resize(values.size() + 3);  // NULLs
        }
        ++n;
    }
    if (n > 0) run(steps_sql(n));
    n = 0;
    for (const RunWrite* w : held) {
        if (w->attempt == nullptr || attempt_in_step(*w)) continue;
        const AttemptRecord& at = *w->attempt;
        push(at.run_id, at.step_key, at.generation, at.attempt, at.started_at, at.ended_at,
             at.outcome, at.error, at.logs, at.worker);
        ++n;
    }
    if (n > 0) run(attempts_sql(n));

    // The runs that end, in one statement per table: the outcome (unless the run was
    // cancelled meanwhile), no waits, and the queue item parked (no lease, never due).
    // The runs that go on are not written: their steps carry the change (engine 6).
    std::vector<const RunEnd*> ends;
    for (RunWrite* w : held) {
        if (w->end == nullptr) continue;
        push(w->lease->run_id);
        ends.push_back(w->end);
        if (w->run_status != run_status::kCancelled) w->run_status = w->end->status;
    }
    if (!ends.empty()) {
        const std::size_t count = ends.size();
        tx.exec_values(unwait_sql(count), values);  // the ids alone
        tx.exec_values(park_sql(count), values);
        for (const RunEnd* end : ends) push(end->status, end->output, end->error, end->at);
        run(end_sql(count));
    }
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

void RunStore::finish_run(Transaction& tx, const Lease& lease, std::string_view status,
                          const std::optional<std::string>& output,
                          const std::optional<std::string>& error, std::int64_t now) {
    tx.exec(
        "UPDATE runs SET status = $2, output = $3, error = $4, ended_at = $5, updated_at = $5 "
        "WHERE id = $1 AND status <> 'cancelled'",
        lease.run_id, status, output, error, now);
    tx.exec("DELETE FROM waits WHERE run_id = $1", lease.run_id);
    release(tx, lease, std::nullopt);
}

void RunStore::release(Transaction& tx, const Lease& lease, std::optional<std::int64_t> next_due) {
    tx.exec(
        "UPDATE queue SET lease_owner = NULL, lease_until = NULL, due_at = $4 "
        "WHERE run_id = $1 AND lease_owner = $2 AND lease_epoch = $3",
        lease.run_id, lease.owner, lease.epoch, next_due);
}

void RunStore::add_wait(Transaction& tx, const WaitRecord& w) {
    tx.exec(
        "INSERT INTO waits (run_id, step_key, event_name, match_field, match_value, expires_at) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (run_id, step_key) DO NOTHING",
        w.run_id, w.step_key, w.event_name, w.match_field, w.match_value, w.expires_at);
}

std::vector<WaitRecord> RunStore::waits_for(Transaction& tx, std::string_view event_name) {
    std::vector<WaitRecord> out;
    for (auto row : tx.exec(
             "SELECT run_id, step_key, event_name, match_field, match_value, expires_at FROM waits "
             "WHERE event_name = $1 ORDER BY run_id, step_key",
             event_name)) {
        out.push_back(WaitRecord{row.get<std::string>(0), row.get<std::string>(1),
                                 row.get<std::string>(2), row.get<std::string>(3),
                                 row.get_opt<std::string>(4), row.get<std::int64_t>(5)});
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
    auto r = tx.exec(
        "UPDATE steps SET status = $3, output = $4, error = $5, ended_at = $6, changed_at = $6, "
        "wake_at = NULL WHERE run_id = $1 AND step_key = $2 AND status = 'waiting'",
        run_id, step_key, error ? "failed" : "completed", output, error, now);
    return r.affected() == 1;
}

bool RunStore::cancel_run(std::string_view run_id, std::int64_t now) {
    return db_.transact([&](Transaction& tx) {
        auto r = tx.exec(
            "UPDATE runs SET status = 'cancelled', ended_at = $2, updated_at = $2 "
            "WHERE id = $1 AND status NOT IN ('completed', 'failed', 'cancelled')",
            run_id, now);
        if (r.affected() != 1) return false;
        tx.exec("DELETE FROM waits WHERE run_id = $1", run_id);
        tx.exec("UPDATE queue SET due_at = NULL WHERE run_id = $1 AND lease_owner IS NULL", run_id);
        return true;
    });
}

std::optional<RunState> RunStore::load(std::string_view run_id) {
    // Two statements on their own, without a shared snapshot: the caller holds the run's
    // lease, so no other worker writes its steps in between (an event completing a waiting
    // step, or a cancel, may land between the reads; the execution copes with both).
    auto runs = db_.read(run_state_sql(), run_id);
    if (runs.empty()) return std::nullopt;
    RunState state = read_state(runs.front());
    for (auto step : db_.read(steps_of_run_sql(), run_id)) state.steps.push_back(read_step(step));
    return state;
}

std::vector<AttemptRecord> RunStore::attempts(std::string_view run_id) {
    auto rows = db_.read(
        "SELECT a.run_id, a.step_key, a.attempt, a.started_at, a.ended_at, a.outcome, a.error, "
        "a.logs, a.worker, a.generation FROM attempt_history a LEFT JOIN steps s ON s.run_id = "
        "a.run_id AND s.step_key = a.step_key WHERE a.run_id = $1 "
        "ORDER BY a.generation, s.seq, a.started_at, a.attempt",
        run_id);
    std::vector<AttemptRecord> out;
    for (auto row : rows) {
        out.push_back(AttemptRecord{row.get<std::string>(0), row.get<std::string>(1),
                                    row.get<std::int64_t>(2), row.get<std::int64_t>(3),
                                    row.get<std::int64_t>(4), row.get<std::string>(5),
                                    row.get_opt<std::string>(6), row.get<std::string>(7),
                                    row.get_opt<std::string>(8), row.get<std::int64_t>(9)});
    }
    return out;
}

std::optional<RunRecord> RunStore::get_run(std::string_view run_id) {
    auto rows = db_.read(run_by_id_sql(), run_id);
    if (rows.empty()) return std::nullopt;
    return read_run(rows.front());
}

std::optional<EventRecord> RunStore::get_event(std::string_view event_id) {
    auto rows = db_.read(event_by_id_sql(), event_id);
    if (rows.empty()) return std::nullopt;
    return read_event(rows.front());
}

std::vector<StepRecord> RunStore::steps(std::string_view run_id) {
    auto rows = db_.read(steps_of_run_sql(), run_id);
    std::vector<StepRecord> out;
    out.reserve(rows.size());
    for (auto row : rows) out.push_back(read_step(row));
    return out;
}

RunPage RunStore::list_runs(const RunFilter& filter, std::optional<std::string> cursor, int limit) {
    if (limit < 1 || limit > 1000) throw std::invalid_argument("limit must be from 1 to 1000");
    std::string sql = fmt::format(
        "SELECT {} FROM runs r JOIN events e ON e.id = r.event_id WHERE 1 = 1", run_columns());
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
    std::int64_t now) {
    return db_.transact([&](Transaction& tx) -> std::variant<std::string, ReplayError> {
        auto src = tx.exec("SELECT workflow_id, event_id FROM runs WHERE id = $1", run_id);
        if (src.empty()) return ReplayError::not_found;
        std::int64_t until_seq = 0;
        if (from_step) {
            auto step = tx.exec("SELECT seq FROM steps WHERE run_id = $1 AND step_key = $2", run_id,
                                *from_step);
            if (step.empty()) return ReplayError::unknown_step;
            until_seq = step.front().get<std::int64_t>(0);
        }
        std::string new_id = new_id_at(now);
        tx.exec(
            "INSERT INTO runs (id, workflow_id, version, event_id, status, attempt, created_at, "
            "updated_at, "
            "replay_of) VALUES ($1, $2, $3, $4, 'queued', 0, $5, $5, $6)",
            new_id, src.front().get<std::string>(0), version, src.front().get<std::string>(1), now,
            run_id);
        tx.exec("INSERT INTO queue (run_id, due_at, priority) VALUES ($1, $2, 0)", new_id, now);
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

void RunStore::notify(Transaction& tx) {
    if (tx.backend() == Backend::postgres) tx.exec("SELECT pg_notify($1, '')", kQueueChannel);
}

std::vector<RunRecord> RunStore::changes_since(std::int64_t after_ms, std::string_view after_id,
                                               int limit) {
    // The changes of run rows and of steps, each in its index's order, merged; a change is
    // a (run, time) position, and a run is returned at each of its positions in the page,
    // with that position as its updated_at. Each side is cut at the page's size before the
    // merge, so a long backlog costs a page's reads per page. DISTINCT: two steps of one
    // run changed in one millisecond are one position, as are a run's end and its last step.
    static const std::string sql = fmt::format(
        "SELECT {}, c.at FROM ("
        "SELECT * FROM (SELECT id AS run_id, updated_at AS at FROM runs "
        "WHERE updated_at >= $1 AND (updated_at > $1 OR id > $2) ORDER BY updated_at, id "
        "LIMIT $3) rc "
        "UNION "
        "SELECT * FROM (SELECT DISTINCT run_id, changed_at AS at FROM steps "
        "WHERE changed_at >= $1 AND (changed_at > $1 OR run_id > $2) ORDER BY changed_at, run_id "
        "LIMIT $3) sc"
        ") c JOIN runs r ON r.id = c.run_id JOIN events e ON e.id = r.event_id "
        "ORDER BY c.at, c.run_id LIMIT $3",
        kRunColumnsButUpdated);
    std::vector<RunRecord> out;
    for (auto row : db_.read(sql, after_ms, after_id, limit)) out.push_back(read_run(row));
    return out;
}

std::vector<RunStore::Count> RunStore::counts_by_workflow_and_status(
    std::optional<std::int64_t> created_from) {
    std::vector<Count> out;
    for (auto row :
         db_.read("SELECT workflow_id, status, count(*) FROM runs WHERE created_at >= $1 "
                  "GROUP BY workflow_id, status ORDER BY workflow_id, status",
                  created_from.value_or(0))) {
        out.push_back(
            Count{row.get<std::string>(0), row.get<std::string>(1), row.get<std::int64_t>(2)});
    }
    return out;
}

RunStore::QueueStats RunStore::queue_stats(std::int64_t now) {
    const Row row = db_.read(
                           "SELECT count(*), COALESCE(sum(CASE WHEN due_at <= $1 AND lease_owner "
                           "IS NULL THEN 1 ELSE "
                           "0 END), 0), "
                           "min(CASE WHEN due_at <= $1 AND lease_owner IS NULL THEN due_at END) "
                           "FROM queue WHERE "
                           "due_at IS NOT NULL",
                           now)
                        .front();
    QueueStats q;
    q.pending = row.get<std::int64_t>(0);
    q.due = row.get<std::int64_t>(1);
    if (auto oldest = row.get_opt<std::int64_t>(2)) q.oldest_due_age_ms = now - *oldest;
    return q;
}

RunStore::EventPage RunStore::list_events(const std::optional<std::string>& name,
                                          std::optional<std::string> cursor, int limit) {
    if (limit < 1 || limit > 1000) throw std::invalid_argument("limit must be from 1 to 1000");
    std::string sql = fmt::format("SELECT {} FROM events WHERE 1 = 1", kEventColumns);
    std::vector<Value> params;
    if (name) {
        params.emplace_back(*name);
        sql += fmt::format(" AND name = ${}", params.size());
    }
    if (cursor) {
        params.emplace_back(*cursor);
        sql += fmt::format(" AND id < ${}", params.size());
    }
    params.emplace_back(static_cast<std::int64_t>(limit) + 1);
    sql += fmt::format(" ORDER BY id DESC LIMIT ${}", params.size());
    EventPage page;
    db_.transact(
        [&](Transaction& tx) {
            for (auto row : tx.exec_values(sql, params)) {
                if (page.events.size() == static_cast<std::size_t>(limit)) {
                    page.next_cursor = page.events.back().event.id;
                    break;
                }
                page.events.push_back({read_event(row), {}});
            }
            for (auto& e : page.events) {
                for (auto row :
                     tx.exec("SELECT id FROM runs WHERE event_id = $1 ORDER BY id", e.event.id)) {
                    e.run_ids.push_back(row.get<std::string>(0));
                }
            }
        },
        Access::read_only);
    return page;
}

std::vector<RunStore::Finished> RunStore::runs_since(std::int64_t created_from) {
    std::vector<Finished> out;
    for (auto row :
         db_.read("SELECT workflow_id, status, created_at, ended_at - started_at FROM runs "
                  "WHERE created_at >= $1",
                  created_from)) {
        out.push_back(Finished{row.get<std::string>(0), row.get<std::string>(1),
                               row.get<std::int64_t>(2), row.get_opt<std::int64_t>(3)});
    }
    return out;
}

std::int64_t RunStore::queue_depth() {
    return db_.read("SELECT count(*) FROM queue WHERE due_at IS NOT NULL")
        .front()
        .get<std::int64_t>(0);
}

}  // namespace cairn::storage
