#include "server/router.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <ctime>
#include <nlohmann/json.hpp>
#include <span>

#include "common/time.hpp"
#include "common/version.hpp"
#include "engine/engine.hpp"
#include "server/api_keys.hpp"
#include "server/metrics.hpp"
#include "storage/database.hpp"
#include "storage/run_store.hpp"

namespace cairn::server {

using nlohmann::json;

Response error_response(int status, std::string_view code, std::string_view message,
                        std::string_view details_json) {
    json details = json::parse(details_json, nullptr, false);
    if (details.is_discarded()) details = json::array();
    json body = {{"error", {{"code", code}, {"message", message}, {"details", details}}}};
    Response r;
    r.status = status;
    r.body = body.dump();
    return r;
}

Response health(storage::Database& db) {
    json body = {{"backend", storage::to_string(db.backend())}, {"version", kVersion}};
    Response r;
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

// ---- router -----------------------------------------------------------------------------

namespace {

std::vector<std::string_view> split_path(std::string_view path) {
    std::vector<std::string_view> out;
    while (!path.empty()) {
        if (path.front() == '/') {
            path.remove_prefix(1);
            continue;
        }
        const auto slash = path.find('/');
        out.push_back(path.substr(0, slash));
        path = slash == std::string_view::npos ? std::string_view{} : path.substr(slash + 1);
    }
    return out;
}

// A pattern segment in braces names a parameter: {id}.
bool is_parameter(std::string_view segment) {
    return segment.size() > 2 && segment.front() == '{' && segment.back() == '}';
}

// Whether a path split by split_path matches a route's pattern; fills `params` if it does.
bool match(const Router::Route& route, bool path_slash, std::span<const std::string_view> xs,
           Params& params) {
    // "/inspector" and "/inspector/" are different routes.
    if (route.trailing_slash != path_slash) return false;
    const auto& ps = route.segments;
    if (ps.size() != xs.size()) return false;
    for (std::size_t i = 0; i < ps.size(); ++i) {
        if (!is_parameter(ps[i]) && ps[i] != xs[i]) return false;
    }
    for (std::size_t i = 0; i < ps.size(); ++i) {
        if (is_parameter(ps[i])) params.emplace(ps[i].substr(1, ps[i].size() - 2), xs[i]);
    }
    return true;
}

}  // namespace

void Router::add(std::string method, std::string pattern, Auth auth, Fn fn) {
    Route route{std::move(method), std::move(pattern), auth, std::move(fn)};
    route.trailing_slash = route.pattern.ends_with('/');
    for (const auto segment : split_path(route.pattern)) route.segments.emplace_back(segment);
    routes_.push_back(std::move(route));
}

Response Router::dispatch(const Request& request) const {
    const auto started = std::chrono::steady_clock::now();
    const std::string_view path = request.path();
    const auto segments = split_path(path);  // once: the routes' patterns are split already
    const bool slash = path.ends_with('/');
    const Route* found = nullptr;
    bool path_known = false;
    std::string allow;  // the methods this path accepts, for a 405
    Params params;
    for (const auto& route : routes_) {
        Params p;
        if (!match(route, slash, segments, p)) continue;
        path_known = true;
        allow += (allow.empty() ? "" : ", ") + route.method;
        if (route.method == request.method || (route.method == "GET" && request.method == "HEAD")) {
            found = &route;
            params = std::move(p);
            break;
        }
    }

    Response res;
    std::string label = "unmatched";
    if (found == nullptr) {
        if (path_known) {
            res = error_response(405, "method_not_allowed",
                                 fmt::format("{} is not allowed on {}", request.method, path));
            res.headers.emplace_back("Allow", allow);
        } else {
            res = error_response(404, "not_found", "no such route");
        }
    } else {
        label = found->pattern;
        std::optional<ApiKey> key;
        if (found->auth != Auth::none) {
            const std::string auth = request.header("authorization");
            if (auth.rfind("Bearer ", 0) == 0 && keys_ != nullptr)
                key = keys_->verify(auth.substr(7));
        }
        if (found->auth != Auth::none && !key) {
            res = error_response(401, "unauthorized",
                                 "a valid API key is required: Authorization: Bearer <key>");
            res.headers.emplace_back("WWW-Authenticate", "Bearer");
        } else if (found->auth == Auth::admin && key->scope != KeyScope::admin) {
            res = error_response(403, "forbidden", "this key may only send events");
        } else {
            res = found->fn(request, params);
        }
    }
    if (metrics_ != nullptr) {
        auto observe = [metrics = metrics_, label, method = request.method, started](int status) {
            metrics->observe_http(
                label, method, status,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
        };
        if (res.later) {
            res.later->on_answer(std::move(observe));
        } else {
            observe(res.status);
        }
    }
    return res;
}

}  // namespace cairn::server
