// Reads of the run store: what a worker loads, and what the API, the CLI and the inspector
// list and show.

#include <fmt/format.h>

#include <stdexcept>

#include "storage/detail/run_rows.hpp"
#include "storage/run_store.hpp"

namespace cairn::storage {

using detail::kEventColumns;
using detail::kRunColumnsButUpdated;
using detail::read_event;
using detail::read_run;
using detail::read_state;
using detail::read_step;
using detail::run_columns;

std::optional<RunState> RunStore::load(std::string_view run_id) {
    // Two statements on their own, without a shared snapshot: the caller holds the run's
    // lease, so no other worker writes its steps in between (an event completing a waiting
    // step, or a cancel, may land between the reads; the execution copes with both).
    auto runs = db_.read(detail::run_state_sql(), run_id);
    if (runs.empty()) return std::nullopt;
    RunState state = read_state(runs.front());
    for (auto step : db_.read(detail::steps_of_run_sql(), run_id))
        state.steps.push_back(read_step(step));
    return state;
}

std::string RunStore::run_status(Transaction& tx, std::string_view run_id) {
    auto rows = tx.exec("SELECT status FROM runs WHERE id = $1", run_id);
    return rows.empty() ? std::string() : rows.front().get<std::string>(0);
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
    auto rows = db_.read(detail::run_by_id_sql(), run_id);
    if (rows.empty()) return std::nullopt;
    return read_run(rows.front());
}

std::optional<RunRecord> RunStore::get_run(Transaction& tx, std::string_view run_id) {
    auto rows = tx.exec(detail::run_by_id_sql(), run_id);
    if (rows.empty()) return std::nullopt;
    return read_run(rows.front());
}

std::optional<EventRecord> RunStore::get_event(std::string_view event_id) {
    auto rows = db_.read(detail::event_by_id_sql(), event_id);
    if (rows.empty()) return std::nullopt;
    return read_event(rows.front());
}

std::optional<EventRecord> RunStore::get_event(Transaction& tx, std::string_view event_id) {
    auto rows = tx.exec(detail::event_by_id_sql(), event_id);
    if (rows.empty()) return std::nullopt;
    return read_event(rows.front());
}

std::vector<StepRecord> RunStore::steps(std::string_view run_id) {
    auto rows = db_.read(detail::steps_of_run_sql(), run_id);
    std::vector<StepRecord> out;
    out.reserve(rows.size());
    for (auto row : rows) out.push_back(read_step(row));
    return out;
}

namespace {

// The WHERE clause of `filter` (after "WHERE 1 = 1") and its parameters.
struct Where {
    std::string sql;
    std::vector<Value> params;
    void add(std::string_view condition, Value v) {
        params.push_back(std::move(v));
        sql += fmt::format(" AND {}", fmt::format(fmt::runtime(condition), params.size()));
    }
};

Where where_of(const RunFilter& filter) {
    Where w;
    if (filter.workflow_id) w.add("r.workflow_id = ${}", *filter.workflow_id);
    if (filter.status) w.add("r.status = ${}", *filter.status);
    if (filter.event_name) w.add("e.name = ${}", *filter.event_name);
    if (filter.created_from) w.add("r.created_at >= ${}", *filter.created_from);
    if (filter.created_to) w.add("r.created_at < ${}", *filter.created_to);
    if (filter.search && !filter.search->empty()) {
        w.add("(r.id LIKE ${0} ESCAPE '\\' OR r.event_id LIKE ${0} ESCAPE '\\')",
              detail::like_prefix(*filter.search));
    }
    return w;
}

}  // namespace

RunPage RunStore::list_runs(const RunFilter& filter, std::optional<std::string> cursor, int limit) {
    if (limit < 1 || limit > 1000) throw std::invalid_argument("limit must be from 1 to 1000");
    Where w = where_of(filter);
    if (cursor) w.add("r.id < ${}", *cursor);
    w.params.emplace_back(static_cast<std::int64_t>(limit) +
                          1);  // one extra row tells whether more follow
    const std::string sql = fmt::format(
        "SELECT {} FROM runs r JOIN events e ON e.id = r.event_id WHERE 1 = 1{} "
        "ORDER BY r.id DESC LIMIT ${}",
        run_columns(), w.sql, w.params.size());
    auto rows = db_.transact([&](Transaction& tx) { return tx.exec_values(sql, w.params); },
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

std::vector<std::string> RunStore::match_runs(const RunFilter& filter) {
    const Where w = where_of(filter);
    const std::string sql = fmt::format(
        "SELECT r.id FROM runs r JOIN events e ON e.id = r.event_id WHERE 1 = 1{} ORDER BY r.id",
        w.sql);
    auto rows = db_.transact([&](Transaction& tx) { return tx.exec_values(sql, w.params); },
                             Access::read_only);
    std::vector<std::string> out;
    out.reserve(rows.size());
    for (auto row : rows) out.push_back(row.get<std::string>(0));
    return out;
}

std::int64_t RunStore::count_runs(const RunFilter& filter) {
    const Where w = where_of(filter);
    const std::string sql = fmt::format(
        "SELECT COUNT(*) FROM runs r JOIN events e ON e.id = r.event_id WHERE 1 = 1{}", w.sql);
    auto rows = db_.transact([&](Transaction& tx) { return tx.exec_values(sql, w.params); },
                             Access::read_only);
    return rows.front().get<std::int64_t>(0);
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
