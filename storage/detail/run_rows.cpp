#include "storage/detail/run_rows.hpp"

#include <fmt/format.h>

#include <cctype>

namespace cairn::storage::detail {

const std::string& run_columns() {
    static const std::string columns = fmt::format(
        "{}, COALESCE((SELECT max(s.changed_at) FROM steps s WHERE s.run_id = r.id AND "
        "s.changed_at > r.updated_at), r.updated_at)",
        kRunColumnsButUpdated);
    return columns;
}

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

const std::string& run_state_sql() {
    static const std::string sql =
        fmt::format("SELECT {}, {} FROM runs r JOIN events e ON e.id = r.event_id WHERE r.id = $1",
                    run_columns(), kStateExtraColumns);
    return sql;
}

RunState read_state(const Row& row) {
    RunState state;
    state.run = read_run(row);
    state.event = EventRecord{state.run.event_id,           state.run.event_name,
                              row.get<std::string>(17),     row.get<std::int64_t>(18),
                              row.get_opt<std::string>(19), row.get<std::int64_t>(20)};
    return state;
}

std::string like_prefix(std::string_view text) {
    std::string out;
    for (char c : text) {
        if (c == '%' || c == '_' || c == '\\') out.push_back('\\');
        out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    }
    out.push_back('%');
    return out;
}

}  // namespace cairn::storage::detail
