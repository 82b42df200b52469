#include "server/views.hpp"

#include <map>

#include "common/time.hpp"

namespace cairn::server {

using nlohmann::json;

namespace {

json time_or_null(const std::optional<std::int64_t>& ms) {
    return ms ? json(format_rfc3339(*ms)) : json(nullptr);
}

json parse_stored(const std::optional<std::string>& text) {
    if (!text) return nullptr;
    json j = json::parse(*text, nullptr, false);
    return j.is_discarded() ? json(*text) : j;
}

}  // namespace

json run_json(const storage::RunRecord& r) {
    json j = {{"id", r.id},
              {"workflow_id", r.workflow_id},
              {"version", r.version},
              {"event_id", r.event_id},
              {"event_name", r.event_name},
              {"status", r.status},
              {"output", parse_stored(r.output)},
              {"error", parse_stored(r.error)},
              {"attempt", r.attempt},
              {"created_at", format_rfc3339(r.created_at)},
              {"started_at", time_or_null(r.started_at)},
              {"ended_at", time_or_null(r.ended_at)},
              {"updated_at", format_rfc3339(r.updated_at)},
              {"duration_ms",
               r.started_at && r.ended_at ? json(*r.ended_at - *r.started_at) : json(nullptr)},
              {"parent_run_id", r.parent_run_id ? json(*r.parent_run_id) : json(nullptr)},
              {"replay_of", r.replay_of ? json(*r.replay_of) : json(nullptr)},
              {"worker", r.worker ? json(*r.worker) : json(nullptr)}};
    return j;
}

json event_json(const storage::EventRecord& e) {
    return {{"id", e.id},
            {"name", e.name},
            {"data", parse_stored(e.data)},
            {"ts", format_rfc3339(e.ts)},
            {"idempotency_key", e.idempotency_key ? json(*e.idempotency_key) : json(nullptr)},
            {"received_at", format_rfc3339(e.received_at)}};
}

json run_detail_json(const storage::RunState& state,
                     const std::vector<storage::AttemptRecord>& attempts) {
    json j = run_json(state.run);
    j["event"] = event_json(state.event);
    std::map<std::string, json> history;
    for (const auto& a : attempts) {
        history[a.step_key].push_back({{"attempt", a.attempt},
                                       {"generation", a.generation},
                                       {"started_at", format_rfc3339(a.started_at)},
                                       {"ended_at", format_rfc3339(a.ended_at)},
                                       {"duration_ms", a.ended_at - a.started_at},
                                       {"outcome", a.outcome},
                                       {"error", parse_stored(a.error)},
                                       {"logs", parse_stored(a.logs)},
                                       {"worker", a.worker ? json(*a.worker) : json(nullptr)}});
    }
    json steps = json::array();
    for (const auto& s : state.steps) {
        steps.push_back({{"key", s.key},
                         {"seq", s.seq},
                         {"kind", s.kind},
                         {"status", s.status},
                         {"output", parse_stored(s.output)},
                         {"error", parse_stored(s.error)},
                         {"attempts", s.attempts},
                         {"started_at", time_or_null(s.started_at)},
                         {"ended_at", time_or_null(s.ended_at)},
                         {"wake_at", time_or_null(s.wake_at)},
                         {"history", history.contains(s.key) ? history[s.key] : json::array()}});
    }
    j["steps"] = steps;
    return j;
}

}  // namespace cairn::server
