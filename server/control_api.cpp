// Operating runs and workflows over HTTP: cancel, retry and replay of one run or of every
// run a filter matches, and pause/resume of a workflow (docs/api.md).

#include "server/control_api.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "engine/engine.hpp"
#include "server/api_common.hpp"
#include "server/views.hpp"

namespace cairn::server {

using api::invalid;
using api::json;
using api::json_response;
using api::parse_body;

namespace {

// A bulk request: {"workflow", "status", "event", "from", "to", "dry_run"}, every field
// optional (no field matches every run, as GET /api/engine/runs does).
struct BulkRequest {
    storage::RunFilter filter;
    bool dry_run = false;
};

std::optional<BulkRequest> parse_bulk(const Request& req, Reply& error) {
    BulkRequest out;
    json body = json::object();
    if (!req.body.empty()) {
        auto parsed = parse_body(req, error);
        if (!parsed) return std::nullopt;
        body = std::move(*parsed);
    }
    if (!body.is_object()) {
        error = invalid("the body must be a JSON object of filters");
        return std::nullopt;
    }
    json details = json::array();
    auto problem = [&](const std::string& field, std::string_view message) {
        details.push_back({{"field", field}, {"message", message}});
    };
    for (const auto& [key, value] : body.items()) {
        std::optional<std::string>* text = nullptr;
        if (key == "workflow") text = &out.filter.workflow_id;
        if (key == "status") text = &out.filter.status;
        if (key == "event") text = &out.filter.event_name;
        if (text != nullptr) {
            if (!value.is_string() || value.get<std::string>().empty())
                problem(key, "must be a non-empty string");
            else
                *text = value.get<std::string>();
        } else if (key == "from" || key == "to") {
            std::optional<std::int64_t> t;
            if (value.is_number_integer()) t = value.get<std::int64_t>();
            if (value.is_string()) t = api::parse_time(value.get<std::string>());
            if (!t) problem(key, "must be epoch milliseconds or an RFC 3339 time");
            (key == "from" ? out.filter.created_from : out.filter.created_to) = t;
        } else if (key == "dry_run") {
            if (!value.is_boolean())
                problem(key, "must be true or false");
            else
                out.dry_run = value.get<bool>();
        } else {
            problem(key, "is not a known field (workflow, status, event, from, to, dry_run)");
        }
    }
    if (out.filter.status && !api::known_statuses().contains(*out.filter.status))
        problem("status", api::kStatusesMessage);
    if (!details.empty()) {
        error = invalid("bad filter", details);
        return std::nullopt;
    }
    return out;
}

void add_bulk_route(Router& router, engine::Engine& eng, const std::string& verb,
                    engine::Engine::BulkOperation op, const std::string& done_field) {
    router.add("POST", "/api/engine/runs/" + verb, Auth::admin,
               [&eng, op, done_field](const Request& req, const Params&) {
                   Reply error;
                   const auto r = parse_bulk(req, error);
                   if (!r) return error;
                   if (r->dry_run)
                       return json_response(
                           200,
                           json{{"matched", eng.store().count_runs(r->filter)}, {"dry_run", true}});
                   const auto done = eng.bulk(op, r->filter);
                   return json_response(200, json{{"matched", done.matched},
                                                  {done_field, done.done.size()},
                                                  {"run_ids", done.done}});
               });
}

}  // namespace

void add_run_operation_routes(Router& router, engine::Engine& eng) {
    using Op = engine::Engine::BulkOperation;
    // Before the routes with an id, though a path never matches both (other segments).
    add_bulk_route(router, eng, "cancel", Op::cancel, "cancelled");
    add_bulk_route(router, eng, "retry", Op::retry, "retried");
    add_bulk_route(router, eng, "replay", Op::replay, "replayed");

    storage::RunStore& store = eng.store();
    auto current = [&store](const std::string& id) {
        return json_response(200, run_json(*store.get_run(id)));
    };
    router.add("POST", "/api/engine/runs/{id}/cancel", Auth::admin,
               [&, current](const Request&, const Params& p) {
                   const auto& id = p.at("id");
                   if (eng.cancel(id)) return current(id);
                   if (!store.get_run(id))
                       return error_response(404, "run_not_found", "no run with this id");
                   return error_response(409, "run_ended", "the run has already ended");
               });

    router.add("POST", "/api/engine/runs/{id}/retry", Auth::admin,
               [&, current](const Request&, const Params& p) {
                   const auto& id = p.at("id");
                   switch (eng.retry(id)) {
                       case storage::RunStore::RetryResult::ok:
                           return current(id);
                       case storage::RunStore::RetryResult::not_found:
                           return error_response(404, "run_not_found", "no run with this id");
                       default:
                           return error_response(409, "run_not_retryable",
                                                 "only failed or cancelled runs can be retried");
                   }
               });

    router.add(
        "POST", "/api/engine/runs/{id}/replay", Auth::admin,
        [&](const Request& req, const Params& p) {
            std::optional<std::string> from_step;
            std::optional<json> data;
            if (!req.body.empty()) {
                Reply error;
                auto body = parse_body(req, error);
                if (!body) return error;
                if (!body->is_object()) return invalid("the body must be an object");
                json details = json::array();
                for (const auto& [key, value] : body->items()) {
                    if (key == "from_step" && value.is_string()) {
                        from_step = value.get<std::string>();
                    } else if (key == "data") {
                        data = value;  // any JSON, as an event's data
                    } else {
                        details.push_back({{"field", key},
                                           {"message", key == "from_step" ? "must be a string"
                                                                          : "is not a known field "
                                                                            "(from_step, data)"}});
                    }
                }
                if (!details.empty()) return invalid("bad replay request", details);
            }
            auto r = eng.replay(p.at("id"), from_step, data);
            if (auto* id = std::get_if<std::string>(&r)) {
                json j = run_json(*store.get_run(*id));
                return json_response(201, j);
            }
            if (std::get<storage::RunStore::ReplayError>(r) ==
                storage::RunStore::ReplayError::not_found) {
                return error_response(404, "run_not_found", "no run with this id");
            }
            return error_response(
                422, "unknown_step", "the run has no step with this key",
                json::array({{{"field", "from_step"}, {"message", "no such step"}}}).dump());
        });
}

void add_workflow_control_routes(Router& router, engine::Engine& eng) {
    // 404 for a workflow no process has registered; the state as GET /workflows shows it.
    auto control = [&eng](bool pause) {
        return [&eng, pause](const Request&, const Params& p) {
            const std::string& id = p.at("id");
            const json listing = eng.workflow_listing();
            const bool known = std::any_of(listing.begin(), listing.end(),
                                           [&](const json& w) { return w["id"] == id; });
            if (!known)
                return error_response(404, "workflow_not_found",
                                      fmt::format("no process has registered workflow '{}'", id));
            const bool changed = pause ? eng.pause(id) : eng.resume(id);
            const auto paused = eng.store().paused_workflows();
            const auto at = paused.find(id);
            return json_response(
                200, json{{"id", id},
                          {"paused", at != paused.end()},
                          {"paused_at", at != paused.end() ? json(at->second) : json(nullptr)},
                          {"changed", changed}});
        };
    };
    router.add("POST", "/api/engine/workflows/{id}/pause", Auth::admin, control(true));
    router.add("POST", "/api/engine/workflows/{id}/resume", Auth::admin, control(false));
}

}  // namespace cairn::server
