#include "server/http/router.hpp"

#include <fmt/format.h>

#include <chrono>
#include <span>

namespace cairn::server {

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

// The route's key check, then the route.
Response Router::call(const Route& route, const Request& request, const Params& params) const {
    if (route.auth == Auth::none) return route.fn(request, params);
    std::optional<Auth> scope;
    const std::string auth = request.header("authorization");
    if (auth.starts_with("Bearer ") && keys_) scope = keys_(std::string_view(auth).substr(7));
    if (!scope) {
        Reply r = error_response(401, "unauthorized",
                                 "a valid API key is required: Authorization: Bearer <key>");
        r.headers.emplace_back("WWW-Authenticate", "Bearer");
        return r;
    }
    if (route.auth == Auth::admin && *scope != Auth::admin)
        return error_response(403, "forbidden", "this key may only send events");
    return route.fn(request, params);
}

Response Router::dispatch(const Request& request) const {
    const auto started = std::chrono::steady_clock::now();
    const std::string_view path = request.path();
    const auto segments = split_path(path);  // once: the routes' patterns are split already
    const bool slash = path.ends_with('/');
    const Route* found = nullptr;
    const Route* path_known = nullptr;  // the first route whose pattern matches the path
    std::string allow;                  // the methods this path accepts, for a 405
    Params params;
    for (const auto& route : routes_) {
        Params p;
        if (!match(route, slash, segments, p)) continue;
        if (path_known == nullptr) path_known = &route;
        allow += (allow.empty() ? "" : ", ") + route.method;
        if (route.method == request.method || (route.method == "GET" && request.method == "HEAD")) {
            found = &route;
            params = std::move(p);
            break;
        }
    }

    Response res;
    if (found != nullptr) {
        res = call(*found, request, params);
    } else if (path_known != nullptr) {
        Reply r = error_response(405, "method_not_allowed",
                                 fmt::format("{} is not allowed on {}", request.method, path));
        r.headers.emplace_back("Allow", allow);
        res = std::move(r);
    } else {
        res = error_response(404, "not_found", "no such route");
    }
    if (observe_) {
        const Route* labelled = found != nullptr ? found : path_known;
        auto observe = [observe = observe_, route = labelled ? labelled->pattern : "unmatched",
                        method = request.method, started](int status) {
            observe(
                route, method, status,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
        };
        if (const auto* later = std::get_if<Deferred>(&res.kind); later && later->later) {
            later->later->on_answer(std::move(observe));
        } else {
            observe(res.status());
        }
    }
    return res;
}

}  // namespace cairn::server
