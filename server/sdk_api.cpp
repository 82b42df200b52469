// What Inngest SDK apps call: their sync (/fn/register), their events (/e/{key}) and the
// dev server's probe (/dev); and the apps API for operators.

#include "server/sdk_api.hpp"

#include <fmt/format.h>

#include <cctype>

#include "common/json.hpp"
#include "common/time.hpp"
#include "common/version.hpp"
#include "engine/engine.hpp"
#include "sdk/apps.hpp"
#include "server/api_common.hpp"
#include "server/api_keys.hpp"
#include "storage/database.hpp"

namespace cairn::server {

using api::json_response;
using nlohmann::json;

namespace {

constexpr std::size_t kMaxEvents = 5000;

json app_json(const sdk::AppRecord& a) {
    json functions = json::array();
    for (const json& f : a.functions) {
        if (!f.is_object()) continue;
        functions.push_back({{"id", f.value("id", "")},
                             {"name", f.value("name", f.value("id", ""))},
                             {"triggers", f.value("triggers", json::array())}});
    }
    return {{"id", a.id},
            {"url", a.url},
            {"sdk", a.sdk},
            {"framework", a.framework},
            {"functions", functions},
            {"warnings", a.warnings},
            {"synced_at", a.synced_at}};
}

// The SDK's answer shape for events: {"ids":[...],"status":N[,"error":...]}.
Reply events_reply(int status, const json& ids, std::string_view error = {}) {
    json body = {{"ids", ids}, {"status", status}};
    if (!error.empty()) body["error"] = error;
    return json_response(status, body);
}

bool reserved(std::string_view name) {
    constexpr std::string_view kPrefix = "inngest/";
    if (name.size() < kPrefix.size()) return false;
    for (std::size_t i = 0; i < kPrefix.size(); ++i) {
        if (std::tolower(static_cast<unsigned char>(name[i])) != kPrefix[i]) return false;
    }
    return true;
}

// One event in the SDK's shape: {name, data, id, ts, user, v}; `user` and `v` are
// accepted and not kept. Returns an error message, or the event in `out`.
std::string read_event(const json& j, engine::EventInput& out) {
    if (!j.is_object()) return "each event must be an object";
    if (!j.contains("name") || !j["name"].is_string() || j["name"].get<std::string>().empty() ||
        j["name"].get<std::string>().size() > 200)
        return "an event needs a \"name\" of 1 to 200 characters";
    out.name = j["name"].get<std::string>();
    if (reserved(out.name))
        return fmt::format("event name '{}' is reserved for internal use", out.name);
    if (j.contains("data") && !j["data"].is_null()) {
        if (!j["data"].is_object()) return "an event's \"data\" must be an object";
        out.data = j["data"];
    }
    if (j.contains("id") && !j["id"].is_null()) {
        if (!j["id"].is_string() || j["id"].get<std::string>().size() > 200)
            return "an event's \"id\" must be a string of at most 200 characters";
        if (!j["id"].get<std::string>().empty()) out.idempotency_key = j["id"].get<std::string>();
    }
    if (j.contains("ts") && !j["ts"].is_null()) {
        if (!j["ts"].is_number_integer() || j["ts"].get<std::int64_t>() < 0)
            return "an event's \"ts\" must be epoch milliseconds";
        if (j["ts"].get<std::int64_t>() > 0) out.ts = j["ts"].get<std::int64_t>();
    }
    return {};
}

Reply outcome_reply(const sdk::Apps::Outcome& o) {
    return json_response(o.status, o.body);
}

}  // namespace

void add_sdk_routes(Router& router, storage::Database& db, sdk::Apps& apps, engine::Engine& engine,
                    ApiKeys& keys) {
    router.add("POST", "/fn/register", Auth::none, [&](const Request& req, const Params&) {
        return outcome_reply(apps.register_app(req.body, req.header("authorization")));
    });

    router.add("GET", "/dev", Auth::none, [&](const Request&, const Params&) {
        if (apps.signed_mode()) return error_response(404, "not_found", "no such route");
        return json_response(200, json{{"version", kVersion},
                                       {"authed", false},
                                       {"functions", json::array()},
                                       {"features", json::object()},
                                       {"isSingleNodeService", true}});
    });

    router.add("POST", "/e/{event_key}", Auth::none, [&](const Request& req, const Params& p) {
        // Signed mode: the path's key is a Cairn API key of scope events or admin. Dev
        // mode, as Inngest's dev server: any key.
        std::string owner = "dev";
        std::optional<ApiKey> key;
        if (apps.signed_mode()) {
            key = keys.verify(p.at("event_key"));
            if (!key) return events_reply(401, json::array(), "Event key not found");
            owner = key->id;
        }
        std::string why;
        const json body = req.body.empty() ? json::array() : parse_untrusted_json(req.body, why);
        if (body.is_discarded()) return events_reply(400, json::array(), "Invalid JSON: " + why);
        const json list = body.is_array() ? body : json::array({body});
        if (!body.is_array() && !body.is_object())
            return events_reply(
                400, json::array(),
                "Request body must contain an event object or an array of event objects");
        if (list.size() > kMaxEvents)
            return events_reply(400, json::array(),
                                fmt::format("at most {} events per request", kMaxEvents));
        const std::string seed = req.header("x-inngest-event-id-seed");
        std::vector<engine::EventInput> events(list.size());
        for (std::size_t i = 0; i < list.size(); ++i) {
            const std::string problem = read_event(list[i], events[i]);
            if (!problem.empty())
                return events_reply(400, json::array(), fmt::format("event {}: {}", i, problem));
            if (key && !key->may_send(events[i].name))
                return events_reply(403, json::array(),
                                    fmt::format("this key may not send '{}'", events[i].name));
            // A retried send (same seed) is the same events; ids are the sender's own.
            if (events[i].idempotency_key) {
                events[i].idempotency_key = owner + "/" + *events[i].idempotency_key;
            } else if (!seed.empty() && seed.size() <= 100) {
                events[i].idempotency_key = fmt::format("{}/seed/{}/{}", owner, seed, i);
            }
        }
        json ids = json::array();
        if (events.size() == 1) {
            ids.push_back(engine.send(events[0]).event_id);
        } else if (!events.empty()) {
            const auto results =
                db.transact([&](storage::Transaction& tx) { return engine.send(tx, events); });
            for (const auto& r : results) ids.push_back(r.event_id);
        }
        return events_reply(200, ids);
    });

    router.add("GET", "/api/engine/apps", Auth::admin, [&](const Request&, const Params&) {
        json out = json::array();
        for (const auto& a : apps.list()) out.push_back(app_json(a));
        return json_response(200, json{{"apps", out}});
    });

    router.add("POST", "/api/engine/apps", Auth::admin, [&](const Request& req, const Params&) {
        Reply error;
        auto body = api::parse_body(req, error);
        if (!body) return error;
        if (!body->is_object() || !body->contains("url") || !(*body)["url"].is_string())
            return api::invalid(
                "the body must be {\"url\": \"http://app/api/inngest\"}",
                json::array({{{"field", "url"}, {"message", "is required and must be a string"}}}));
        for (const auto& [k, v] : body->items()) {
            if (k != "url")
                return api::invalid(
                    "unknown field",
                    json::array({{{"field", k}, {"message", "is not a known field"}}}));
        }
        const sdk::Apps::Outcome o = apps.sync((*body)["url"].get<std::string>());
        if (o.status != 200) {
            const std::string message = o.body.value("error", std::string("the sync failed"));
            return error_response(o.status == 400 ? 400 : 502,
                                  o.status == 400 ? "invalid_app" : "sync_failed", message);
        }
        const std::string id = o.body.value("app_id", "");
        if (const auto a = id.empty() ? std::nullopt : apps.find(id)) {
            json out = app_json(*a);
            out["modified"] = o.body.value("modified", false);
            return json_response(200, out);
        }
        return json_response(200, o.body);
    });

    router.add("GET", "/api/engine/apps/{id}", Auth::admin, [&](const Request&, const Params& p) {
        const auto a = apps.find(p.at("id"));
        if (!a) return error_response(404, "not_found", fmt::format("no app '{}'", p.at("id")));
        return json_response(200, app_json(*a));
    });

    router.add(
        "DELETE", "/api/engine/apps/{id}", Auth::admin, [&](const Request&, const Params& p) {
            if (!apps.remove(p.at("id")))
                return error_response(404, "not_found", fmt::format("no app '{}'", p.at("id")));
            Reply r;
            r.status = 204;
            return r;
        });
}

}  // namespace cairn::server
