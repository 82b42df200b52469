// Postgres's statements of the run store (detail::RunStatements). A round trip costs
// more than the work of a statement here, so a batch is one statement: rows go in as one
// array per column, unnested, so that the text is the same for every batch size (each
// connection prepares it once and Postgres plans it a few times, then keeps a generic
// plan), and the parts of a batch are the CTEs of one data-modifying WITH.

#include "storage/detail/run_statements.hpp"

#include <fmt/format.h>

#include <array>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/ids.hpp"
#include "storage/detail/params.hpp"
#include "storage/run_store.hpp"

namespace cairn::storage::detail {
namespace {

// The statement that inserts a new event, its runs and their queue items: the runs and
// items are written only for an inserted event (`FROM e`). With `claimed`, the runs are
// written as a claim leaves them: running, their items leased (epoch 1). Returns the
// inserted event's id, or no row.
std::string event_statement(Params& param, const NewEvent& event, const std::string& event_id,
                            std::span<const NewRun> runs, std::span<const std::string> run_ids,
                            std::int64_t now, const ClaimedBy* claimed) {
    const std::string e = fmt::format(
        "e AS (INSERT INTO events (id, name, data, ts, idempotency_key, received_at) "
        "VALUES ({}, {}, {}, CAST({} AS BIGINT), {}, CAST({} AS BIGINT)) "
        "ON CONFLICT DO NOTHING RETURNING id)",
        param(event_id), param(event.name), param(event.data), param(event.ts.value_or(now)),
        param(event.idempotency_key), param(now));
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
        "WITH {0}, v (id, workflow_id, version, priority, parent_run_id, parent_step_key) AS "
        "(VALUES {1}), "
        "r AS (INSERT INTO runs (id, workflow_id, version, event_id, status, attempt, "
        "created_at, updated_at, started_at, worker, parent_run_id, parent_step_key) "
        "SELECT v.id, v.workflow_id, v.version, e.id, {3}, 0, CAST({2} AS BIGINT), "
        "CAST({2} AS BIGINT), {4}, {5}, v.parent_run_id, v.parent_step_key FROM v, e "
        "RETURNING id), "
        "q AS (INSERT INTO queue (run_id, due_at, priority, lease_owner, lease_until, "
        "lease_epoch, workflow_id) SELECT r.id, CAST({6} AS BIGINT), v.priority, {7}, "
        "v.workflow_id FROM r JOIN v ON v.id = r.id) "
        "SELECT e.id FROM e",
        e, rows, at, status, started, worker, due, lease);
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

// The event rows ($1-$6) as `ve`, and the insert `e` of those no run waits for. ON
// CONFLICT DO NOTHING also skips a row that conflicts with one inserted earlier by the
// same statement; the runs and queue items follow the events actually inserted.
constexpr std::string_view kEventRowsSql =
    "ve AS (SELECT * FROM unnest(CAST($1 AS TEXT[]), CAST($2 AS TEXT[]), CAST($3 AS TEXT[]), "
    "CAST($4 AS BIGINT[]), CAST($5 AS TEXT[]), CAST($6 AS BIGINT[])) AS ve (id, name, data, "
    "ts, idempotency_key, received_at)), "
    "e AS (INSERT INTO events (id, name, data, ts, idempotency_key, received_at) "
    "SELECT id, name, data, ts, idempotency_key, received_at FROM ve "
    "WHERE NOT EXISTS (SELECT 1 FROM waits WHERE waits.event_name = ve.name) "
    "ON CONFLICT DO NOTHING RETURNING id, received_at)";
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
    "lease_epoch, workflow_id) SELECT r.id, COALESCE(vr.lease_until, r.created_at), "
    "vr.priority, vr.lease_owner, vr.lease_until, CASE WHEN vr.lease_owner IS NULL THEN 0 "
    "ELSE 1 END, vr.workflow_id FROM r JOIN vr ON vr.id = r.id)";

// The columns of `v` in the record statement (write_runs_sql): name and element type.
// name and element type of each column of `v`, in order
constexpr std::array<std::pair<std::string_view, std::string_view>, 30> kRunColumns{{
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

// The records as one array per column of kRunColumns (NULL for the parts a write lacks).
std::vector<Value> run_rows(std::span<RunWrite* const> writes) {
    static const StepRecord kNoStep;
    static const AttemptRecord kNoAttempt;
    static const RunEnd kNoEnd;
    std::array<std::vector<Value>, kRunColumns.size()> cols;
    for (const RunWrite* w : writes) {
        const StepRecord& st = w->step ? *w->step : kNoStep;
        const AttemptRecord& a = w->attempt ? *w->attempt : kNoAttempt;
        const RunEnd& end = w->end ? *w->end : kNoEnd;
        const bool in_step = attempt_in_step(*w), in_table = w->attempt && !in_step;
        auto when = [](bool present, const auto& v) { return present ? to_value(v) : Value{}; };
        std::array<Value, kRunColumns.size()> row{
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
    return params;
}

// The fence and every write of a batch of records in one statement: $1..$30, one array
// per column of `v`. The fence locks each run's queue row and checks the lease; an ending
// run's item is parked in the same update; every other part writes only for runs the
// fence kept, and for a cancelled run only the step and attempt records made by its cancel
// (a step that was executing then leaves no result). Only the runs that end are written; a run
// that goes on is read for its status (as of the statement's start), which is how its
// worker learns of a cancellation. Returns (run id, status) of each run whose lease held.
std::string write_runs_sql() {
    std::string arrays, names;
    for (std::size_t i = 0; i < kRunColumns.size(); ++i) {
        arrays += fmt::format("{}CAST(${} AS {}[])", i ? ", " : "", i + 1, kRunColumns[i].second);
        names += fmt::format("{}{}", i ? ", " : "", kRunColumns[i].first);
    }
    return fmt::format(
        "WITH v AS (SELECT * FROM unnest({0}) AS v ({4})), "
        "fence AS (UPDATE queue q SET lease_epoch = q.lease_epoch, "
        "lease_owner = CASE WHEN v.fin IS NULL THEN q.lease_owner END, "
        "lease_until = CASE WHEN v.fin IS NULL THEN q.lease_until END, "
        "due_at = CASE WHEN v.fin IS NULL THEN q.due_at END FROM v "
        "WHERE q.run_id = v.run_id AND q.lease_owner = v.owner AND q.lease_epoch = v.epoch "
        "RETURNING q.run_id), "
        "st AS (SELECT f.run_id, ru.status, ru.ended_at FROM fence f JOIN runs ru "
        "ON ru.id = f.run_id), "
        "s AS (INSERT INTO steps ({1}) SELECT {1} FROM v WHERE step_key IS NOT NULL "
        "AND run_id IN (SELECT run_id FROM st WHERE status <> 'cancelled' "
        "OR v.changed_at <= st.ended_at) {2}), "
        "a AS (INSERT INTO step_attempts ({3}) SELECT run_id, a_step_key, a_generation, "
        "a_attempt, a_started_at, a_ended_at, a_outcome, a_error, a_logs, a_worker FROM v "
        "WHERE a_step_key IS NOT NULL AND run_id IN (SELECT run_id FROM st WHERE status <> "
        "'cancelled' OR v.a_ended_at <= st.ended_at)), "
        "d AS (DELETE FROM waits WHERE run_id IN "
        "(SELECT run_id FROM v WHERE fin IS NOT NULL AND run_id IN (SELECT run_id FROM "
        "fence))), "
        "r AS (UPDATE runs SET updated_at = v.touched, status = v.fin, output = v.fout, "
        "error = v.ferr, ended_at = v.touched "
        "FROM v WHERE runs.id = v.run_id AND v.fin IS NOT NULL "
        "AND v.run_id IN (SELECT run_id FROM fence) AND runs.status <> 'cancelled' "
        "RETURNING runs.id, runs.status) "
        "SELECT st.run_id, COALESCE(r.status, CASE WHEN v.fin IS NULL THEN st.status "
        "ELSE 'cancelled' END) FROM st JOIN v ON v.run_id = st.run_id "
        "LEFT JOIN r ON r.id = st.run_id",
        arrays, kStepColumnList, kStepUpsert, kAttemptColumnList, names);
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

class PostgresRunStatements final : public RunStatements {
  public:
    bool writes_alone() const override { return true; }

    bool insert_event(Transaction& tx, const NewEvent& event, const std::string& event_id,
                      std::span<const NewRun> runs, std::span<const std::string> run_ids,
                      std::int64_t now, const ClaimedBy* claimed) override {
        if (runs.empty()) return insert_event_row(tx, event, event_id, now);
        // One statement (one round trip) for the event, its runs and their queue items;
        // the runs exist only if the event was new.
        Params param;
        const std::string sql =
            event_statement(param, event, event_id, runs, run_ids, now, claimed);
        return !tx.exec_values(sql, param.values).empty();
    }

    void insert_events(const Exec& exec, std::span<EventWrite* const> events) override {
        // An id or idempotency key given twice: only its first event goes in the statement
        // (the runs follow their event by id, so a second event of one id must not be there).
        EventColumns cols;
        std::unordered_set<std::string> ids, keys;
        std::vector<EventWrite*> sent;
        for (EventWrite* w : events) {
            const NewEvent& e = *w->event;
            w->written = false;
            w->inserted = InsertedEvent{e.id.value_or(new_id_at(w->now)), {}, false};
            if (w->claimed) w->claimed->claims.clear();
            if (!ids.insert(w->inserted.event_id).second ||
                (e.idempotency_key && !keys.insert(*e.idempotency_key).second))
                continue;
            sent.push_back(w);
            for (std::size_t r = 0; r < w->runs.size(); ++r)
                w->inserted.run_ids.push_back(new_id_at(w->now));
            cols.add(e, w->inserted, w->runs, w->now, w->claimed);
        }
        static const std::string kSql =
            fmt::format("WITH {}, {} SELECT id FROM e", kEventRowsSql, kRunRowsSql);
        std::unordered_set<std::string> written;
        for (auto row : exec(kSql, cols.params())) written.insert(row.get<std::string>(0));
        for (EventWrite* w : sent) {
            w->written = written.contains(w->inserted.event_id);
            if (!w->written) {
                w->inserted.run_ids.clear();
                continue;
            }
            if (w->claimed) add_claims(w->claimed, *w->event, w->inserted, w->runs, w->now);
        }
    }

    // The claim is the function cairn_claim (engine migrations 4 and 8), planned once per
    // connection: take the due items in claim order, skipping locked ones; renew their
    // lease; mark their runs running unless ended.
    // A TEXT[] literal.
    Value workflow_set(std::span<const std::string> ids) const override {
        return pg_array(std::vector<Value>(ids.begin(), ids.end()));
    }

    std::vector<Lease> claim(const Exec& exec, std::string_view owner, int limit, std::int64_t now,
                             std::int64_t until, const Value& workflows) override {
        const Value take[] = {to_value(owner), to_value(until), to_value(now), to_value(limit),
                              workflows};
        std::vector<Lease> out;
        for (auto row : exec("SELECT claimed_run, claimed_epoch FROM cairn_claim($1, $2, $3, $4, "
                             "CAST($5 AS TEXT[]))",
                             take)) {
            out.push_back(Lease{row.get<std::string>(0), std::string(owner),
                                row.get<std::int64_t>(1), until});
        }
        return out;
    }

    void write_runs(const Exec& exec, std::span<RunWrite* const> writes) override {
        static const std::string sql = write_runs_sql();
        apply_statuses(writes, exec(sql, run_rows(writes)));
    }

    void notify(Transaction& tx) override {
        tx.exec("SELECT pg_notify($1, '')", RunStore::kQueueChannel);
    }
};

}  // namespace

std::unique_ptr<RunStatements> postgres_run_statements() {
    return std::make_unique<PostgresRunStatements>();
}

}  // namespace cairn::storage::detail
