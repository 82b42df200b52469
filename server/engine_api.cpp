// The engine's HTTP API under /api/engine/ (docs/api.md), /metrics and the route table.
// Handlers parse and validate, call the engine or the run store, and format JSON.

#include "server/engine_api.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <ctime>
#include <nlohmann/json.hpp>
#include <set>

#include "common/ids.hpp"
#include "common/json.hpp"
#include "common/time.hpp"
#include "common/version.hpp"
#include "engine/engine.hpp"
#include "server/api_common.hpp"
#include "server/api_keys.hpp"
#include "server/control_api.hpp"
#include "server/metrics.hpp"
#include "server/ui_assets.hpp"
#include "server/views.hpp"
#include "storage/database.hpp"
#include "storage/run_store.hpp"

namespace cairn::server {

using api::invalid;
using api::json_response;
using api::known_statuses;
using api::parse_body;
using api::parse_time;
using nlohmann::json;

namespace {

constexpr std::size_t kMaxBatch = 1000;
constexpr int kDefaultLimit = 50;
constexpr std::int64_t kStreamOverlapMs = 2000;  // changes may commit up to this late
constexpr std::int64_t kKeepaliveMs = 15'000;
constexpr int kStreamPage = 500;              // changes read per poll
constexpr std::int64_t kKeyRecheckMs = 5000;  // how often a stream verifies its key again

// Reads ?limit= (1..1000, default 50).
std::optional<int> parse_limit(const Request& req, Reply& error) {
    const auto text = req.query("limit");
    if (!text) return kDefaultLimit;
    int n = 0;
    auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), n);
    if (ec != std::errc{} || end != text->data() + text->size() || n < 1 || n > 1000) {
        error = invalid("limit must be an integer from 1 to 1000",
                        json::array({{{"field", "limit"}, {"message", "must be 1..1000"}}}));
        return std::nullopt;
    }
    return n;
}

// Validates one event object of POST /events; appends problems to `details`.
std::optional<engine::EventInput> parse_event(const json& j, const std::string& where,
                                              json& details) {
    auto problem = [&](std::string_view field, std::string_view message) {
        details.push_back({{"field", where + std::string(field)}, {"message", message}});
    };
    if (!j.is_object()) {
        problem("", "must be an object");
        return std::nullopt;
    }
    const std::size_t before = details.size();
    engine::EventInput e;
    if (!j.contains("name") || !j["name"].is_string()) {
        problem("name", "is required and must be a string");
    } else {
        e.name = j["name"].get<std::string>();
        if (e.name.empty() || e.name.size() > 200) problem("name", "must be 1 to 200 characters");
    }
    if (j.contains("data")) e.data = j["data"];
    if (j.contains("id")) {
        if (!j["id"].is_string() || !is_uuid(j["id"].get<std::string>())) {
            problem("id", "must be a UUID string");
        } else {
            e.id = j["id"].get<std::string>();
        }
    }
    if (j.contains("idempotency_key")) {
        if (!j["idempotency_key"].is_string() || j["idempotency_key"].get<std::string>().empty() ||
            j["idempotency_key"].get<std::string>().size() > 200) {
            problem("idempotency_key", "must be a string of 1 to 200 characters");
        } else {
            e.idempotency_key = j["idempotency_key"].get<std::string>();
        }
    }
    if (j.contains("ts")) {
        if (j["ts"].is_number_integer()) {
            e.ts = j["ts"].get<std::int64_t>();
        } else if (j["ts"].is_string() && parse_time(j["ts"].get<std::string>())) {
            e.ts = parse_time(j["ts"].get<std::string>());
        } else {
            problem("ts", "must be epoch milliseconds or an RFC 3339 time");
        }
    }
    for (const auto& [k, v] : j.items()) {
        static const std::set<std::string> kKnown = {"name", "data", "id", "idempotency_key", "ts"};
        if (!kKnown.contains(k)) problem(k, "is not a known field");
    }
    if (details.size() != before) return std::nullopt;
    return e;
}

json sent_json(const engine::SendResult& r) {
    return {{"id", r.event_id}, {"run_ids", r.run_ids}, {"duplicate", r.duplicate}};
}

// State of one SSE connection.
struct StreamState {
    std::int64_t floor = 0;      // changes at or before (floor, floor_id) were sent
    std::string floor_id = "~";  // "~" sorts after every id: all of `floor` is done
    std::set<std::pair<std::string, std::int64_t>> sent;  // (run id, updated_at) above floor
    std::int64_t last_write = 0;
    std::string key;  // the secret the stream was opened with, verified again now and then
    std::int64_t key_checked_at = 0;
    bool ended = false;
};

}  // namespace

Reply health(storage::Database& db) {
    json body = {{"backend", storage::to_string(db.backend())}, {"version", kVersion}};
    Reply r;
    try {
        db.read("SELECT 1");
        body["status"] = "ok";
        body["database"] = "ok";
    } catch (const std::exception& e) {
        spdlog::warn("health check: database did not answer: {}", e.what());
        body["status"] = "unavailable";
        body["database"] = "unreachable";
        r.status = 503;
    }
    r.body = body.dump();
    return r;
}

namespace {

// /health, /metrics and the OpenAPI document.
void add_service_routes(Router& router, storage::Database& db, engine::Engine& eng,
                        Metrics& metrics) {
    storage::RunStore& store = eng.store();
    auto now = [&eng] { return eng.clock().now_ms(); };
    router.add("GET", "/health", Auth::none,
               [&db](const Request&, const Params&) { return health(db); });

    router.add("GET", "/metrics", Auth::none, [&, now](const Request& req, const Params&) {
        if (!metrics.authorized(req.header("authorization")))
            return error_response(401, "unauthorized",
                                  "/metrics needs Authorization: Bearer <CAIRN_METRICS_KEY>");
        Reply r;
        r.content_type = "text/plain; version=0.0.4";
        r.body = metrics.render(store, eng.stats(), eng.queue_depths(), now());
        return r;
    });

    router.add("GET", "/api/engine/openapi.json", Auth::none, [](const Request&, const Params&) {
        Reply r;
        r.body = std::string(openapi_json());
        return r;
    });
}

// The inspector UI: static and public (it asks for a key and calls the API with it).
void add_inspector_routes(Router& router) {
    auto ui_file = [](std::string_view name) {
        for (const auto& asset : ui_assets()) {
            if (asset.name != name) continue;
            Reply r;
            r.content_type = std::string(asset.content_type);
            r.body = std::string(asset.body);
            r.headers = {
                {"Content-Security-Policy",
                 "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                 "frame-ancestors 'none'"},
                {"X-Content-Type-Options", "nosniff"},
                {"Referrer-Policy", "no-referrer"},
                {"Cache-Control", "no-cache"}};
            return r;
        }
        return error_response(404, "not_found", "no such file");
    };
    router.add("GET", "/inspector", Auth::none, [](const Request&, const Params&) {
        Reply r = error_response(301, "moved", "see /inspector/");
        r.headers.emplace_back("Location", "/inspector/");
        return r;
    });
    router.add("GET", "/inspector/", Auth::none,
               [ui_file](const Request&, const Params&) { return ui_file("index.html"); });
    router.add("GET", "/inspector/{file}", Auth::none,
               [ui_file](const Request&, const Params& p) { return ui_file(p.at("file")); });
}

// Sending and listing events.
void add_event_routes(Router& router, storage::Database& db, engine::Engine& eng, ApiKeys& keys) {
    storage::RunStore& store = eng.store();
    router.add("POST", "/api/engine/events", Auth::events, [&](const Request& req, const Params&) {
        // The router let the key in; its event names and id are read here.
        const std::string auth = req.header("authorization");
        const auto key =
            keys.verify(std::string_view(auth).substr(std::min<std::size_t>(7, auth.size())));
        if (!key) return error_response(401, "unauthorized", "the API key was revoked");
        Reply error;
        auto body = parse_body(req, error);
        if (!body) return error;
        const bool batch = body->is_array();
        if (batch && (body->empty() || body->size() > kMaxBatch)) {
            return invalid(fmt::format("a batch holds 1 to {} events", kMaxBatch));
        }
        json details = json::array();
        std::vector<engine::EventInput> events;
        if (batch) {
            for (std::size_t i = 0; i < body->size(); ++i) {
                if (auto e = parse_event((*body)[i], fmt::format("[{}].", i), details))
                    events.push_back(std::move(*e));
            }
        } else if (auto e = parse_event(*body, "", details)) {
            events.push_back(std::move(*e));
        }
        if (!details.empty()) return invalid("the event is not valid", details);
        for (std::size_t i = 0; i < events.size(); ++i) {
            if (!key->may_send(events[i].name))
                details.push_back(
                    {{"field", batch ? fmt::format("[{}].name", i) : "name"},
                     {"message", fmt::format("this key may not send '{}'", events[i].name)}});
            // Idempotency keys are the sending key's own: another key cannot claim (and so
            // suppress) a producer's events by sending its keys first.
            if (events[i].idempotency_key)
                events[i].idempotency_key = key->id + "/" + *events[i].idempotency_key;
        }
        if (!details.empty())
            return error_response(403, "forbidden", "the key may not send these events",
                                  details.dump());
        // A batch is all or nothing; a single event shares a commit with other sends.
        std::vector<engine::SendResult> results;
        if (events.size() == 1) {
            results.push_back(eng.send(events[0]));
        } else {
            results = db.transact([&](storage::Transaction& tx) { return eng.send(tx, events); });
        }
        if (!batch) return json_response(results[0].duplicate ? 200 : 201, sent_json(results[0]));
        json out = json::array();
        for (const auto& r : results) out.push_back(sent_json(r));
        return json_response(200, json{{"events", out}});
    });

    router.add("GET", "/api/engine/events", Auth::admin, [&](const Request& req, const Params&) {
        Reply error;
        const auto limit = parse_limit(req, error);
        if (!limit) return error;
        auto page = store.list_events(req.query("name"), req.query("cursor"), *limit);
        json events = json::array();
        for (const auto& e : page.events) {
            json j = event_json(e.event);
            j["run_ids"] = e.run_ids;
            j["skipped"] = eng.skipped_starts(e.event.id);
            events.push_back(std::move(j));
        }
        return json_response(
            200, json{{"events", events},
                      {"next_cursor", page.next_cursor ? json(*page.next_cursor) : json(nullptr)}});
    });
}

// Listing, showing and operating runs.
void add_run_routes(Router& router, engine::Engine& eng) {
    storage::RunStore& store = eng.store();
    router.add("GET", "/api/engine/runs", Auth::admin, [&](const Request& req, const Params&) {
        Reply error;
        const auto limit = parse_limit(req, error);
        if (!limit) return error;
        storage::RunFilter f;
        f.workflow_id = req.query("workflow");
        f.status = req.query("status");
        f.event_name = req.query("event");
        f.search = req.query("q");
        json details = json::array();
        if (f.status && !known_statuses().contains(*f.status)) {
            details.push_back({{"field", "status"}, {"message", api::kStatusesMessage}});
        }
        for (const auto& [field, target] :
             {std::pair{"from", &f.created_from}, std::pair{"to", &f.created_to}}) {
            if (auto text = req.query(field)) {
                *target = parse_time(*text);
                if (!*target) {
                    details.push_back(
                        {{"field", field}, {"message", "must be epoch milliseconds or RFC 3339"}});
                }
            }
        }
        if (!details.empty()) return invalid("bad query parameters", details);
        auto page = store.list_runs(f, req.query("cursor"), *limit);
        json runs = json::array();
        for (const auto& r : page.runs) runs.push_back(run_json(r));
        return json_response(
            200, json{{"runs", runs},
                      {"next_cursor", page.next_cursor ? json(*page.next_cursor) : json(nullptr)}});
    });

    router.add("GET", "/api/engine/runs/{id}", Auth::admin, [&](const Request&, const Params& p) {
        auto state = store.load(p.at("id"));
        if (!state) return error_response(404, "run_not_found", "no run with this id");
        json j = run_detail_json(*state, store.attempts(state->run.id));
        j["held"] = eng.held_back(state->run);
        return json_response(200, j);
    });
}

// The workflows of this process and of every other on the database, with recent counts.
void add_workflow_routes(Router& router, engine::Engine& eng) {
    storage::RunStore& store = eng.store();
    auto now = [&eng] { return eng.clock().now_ms(); };
    router.add(
        "GET", "/api/engine/workflows", Auth::admin, [&, now](const Request&, const Params&) {
            std::map<std::string, json> counts;
            for (const auto& c : store.counts_by_workflow_and_status())
                counts[c.workflow_id][c.status] = c.runs;
            const std::int64_t t = now();
            const auto recent = store.runs_since(t - 24 * 3600 * 1000);
            // Counts by status, p50/p95 duration and failure rate of the runs created since `from`.
            auto window_stats = [&](const std::string& workflow, std::int64_t from) {
                json by_status = json::object();
                std::vector<std::int64_t> durations;
                std::int64_t failed = 0;
                std::int64_t ended = 0;
                for (const auto& r : recent) {
                    if (r.workflow_id != workflow || r.created_at < from) continue;
                    by_status[r.status] = by_status.value(r.status, 0) + 1;
                    if (r.status == "completed" || r.status == "failed") {
                        ++ended;
                        failed += r.status == "failed" ? 1 : 0;
                        if (r.duration_ms) durations.push_back(*r.duration_ms);
                    }
                }
                std::sort(durations.begin(), durations.end());
                auto percentile = [&](double p) -> json {
                    if (durations.empty()) return nullptr;
                    return durations[static_cast<std::size_t>(
                        p * static_cast<double>(durations.size() - 1) + 0.5)];
                };
                return json{{"counts", by_status},
                            {"p50_ms", percentile(0.50)},
                            {"p95_ms", percentile(0.95)},
                            {"failure_rate",
                             ended ? json(static_cast<double>(failed) / static_cast<double>(ended))
                                   : json(nullptr)}};
            };
            json out = eng.workflow_listing();
            for (json& w : out) {
                const std::string id = w["id"].get<std::string>();
                w["counts"] = counts.contains(id) ? counts[id] : json::object();
                w["last_hour"] = window_stats(id, t - 3600 * 1000);
                w["last_day"] = window_stats(id, t - 24 * 3600 * 1000);
            }
            const auto kept = eng.retention().count();
            return json_response(
                200,
                json{{"workflows", out}, {"retention_ms", kept > 0 ? json(kept) : json(nullptr)}});
        });
}

// Server-sent events of run changes.
void add_stream_route(Router& router, engine::Engine& eng, ApiKeys& keys) {
    storage::RunStore& store = eng.store();
    auto now = [&eng] { return eng.clock().now_ms(); };
    router.add(
        "GET", "/api/engine/stream", Auth::admin,
        [&, now](const Request& req, const Params&) -> Response {
            auto state = std::make_shared<StreamState>();
            std::string resume = req.header("last-event-id");
            if (resume.empty()) resume = req.query("last_event_id").value_or("");
            std::int64_t from = now();
            if (!resume.empty()) {
                auto [end, ec] =
                    std::from_chars(resume.data(), resume.data() + resume.size(), from);
                if (ec != std::errc{} || end != resume.data() + resume.size()) {
                    return invalid("Last-Event-ID must be the id of an event from this stream");
                }
            }
            state->floor = from;
            state->last_write = now();
            state->key = std::string(std::string_view(req.header("authorization")).substr(7));
            state->key_checked_at = now();
            EventStream r;
            r.head.content_type = "text/event-stream";
            r.head.body = "retry: 2000\n: connected\n\n";
            r.next = [state, &store, &keys, now]() -> std::optional<std::string> {
                if (state->ended) return std::nullopt;
                // A revoked key ends the stream at the next check.
                if (now() - state->key_checked_at >= kKeyRecheckMs) {
                    state->key_checked_at = now();
                    const auto key = keys.verify(state->key);
                    if (!key || key->scope != KeyScope::admin) {
                        state->ended = true;
                        return "event: error\ndata: {\"code\":\"unauthorized\",\"message\":"
                               "\"the API key was revoked\"}\n\n";
                    }
                }
                std::string out;
                std::int64_t newest = state->floor;
                const auto changes =
                    store.changes_since(state->floor, state->floor_id, kStreamPage);
                for (const auto& run : changes) {
                    newest = std::max(newest, run.updated_at);
                    if (!state->sent.emplace(run.id, run.updated_at).second) continue;
                    out += fmt::format("id: {}\nevent: run\ndata: {}\n\n", run.updated_at,
                                       run_json(run).dump());
                }
                // Keep a window of recent changes to catch ones that commit late; but when a
                // full page came back, move past it, or a burst larger than a page inside the
                // window would be read again and again.
                const bool full = changes.size() == static_cast<std::size_t>(kStreamPage);
                if (full) {  // a burst: page on by position, without the overlap
                    state->floor = changes.back().updated_at;
                    state->floor_id = changes.back().id;
                    return out;
                }
                const std::int64_t floor = std::max(state->floor, newest - kStreamOverlapMs);
                if (floor != state->floor) state->floor_id = "~";
                std::erase_if(state->sent, [floor](const auto& e) { return e.second <= floor; });
                state->floor = floor;
                const std::int64_t t = now();
                if (out.empty() && t - state->last_write >= kKeepaliveMs) out = ": keepalive\n\n";
                if (!out.empty()) state->last_write = t;
                return out;
            };
            return r;
        });
}

}  // namespace

std::unique_ptr<Router> make_router(storage::Database& db, engine::Engine& eng, ApiKeys& keys,
                                    Metrics& metrics) {
    auto router = std::make_unique<Router>(
        [&keys](std::string_view secret) -> std::optional<Auth> {
            const auto key = keys.verify(secret);
            if (!key) return std::nullopt;
            return key->scope == KeyScope::admin ? Auth::admin : Auth::events;
        },
        [&metrics](const std::string& route, const std::string& method, int status, double s) {
            metrics.observe_http(route, method, status, s);
        });
    add_service_routes(*router, db, eng, metrics);
    add_inspector_routes(*router);
    add_event_routes(*router, db, eng, keys);
    add_run_routes(*router, eng);
    add_run_operation_routes(*router, eng);
    add_workflow_control_routes(*router, eng);
    add_workflow_routes(*router, eng);
    add_stream_route(*router, eng, keys);
    return router;
}

}  // namespace cairn::server
