#include "server/response_policy.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

namespace cairn::server {
namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

constexpr std::string_view kMethods = "GET, POST, PUT, PATCH, DELETE";
constexpr std::string_view kExposed = "Retry-After, X-Request-Id";

}  // namespace

// The headers a browser applies to keep a page safe. The content policy allows the
// inspector's own scripts and styles, and nothing inline but styles.
const Headers& ResponsePolicy::fixed_headers() {
    static const Headers kFixed = {
        {"Content-Security-Policy",
         "default-src 'self';base-uri 'self';font-src 'self' https: data:;form-action "
         "'self';frame-ancestors 'self';img-src 'self' data:;object-src 'none';script-src "
         "'self';script-src-attr 'none';style-src 'self' https: 'unsafe-inline'"},
        {"Cross-Origin-Opener-Policy", "same-origin"},
        {"Cross-Origin-Resource-Policy", "same-origin"},
        {"Origin-Agent-Cluster", "?1"},
        {"Referrer-Policy", "no-referrer"},
        {"X-Content-Type-Options", "nosniff"},
        {"X-DNS-Prefetch-Control", "off"},
        {"X-Download-Options", "noopen"},
        {"X-Frame-Options", "SAMEORIGIN"},
        {"X-Permitted-Cross-Domain-Policies", "none"},
        {"X-XSS-Protection", "0"},
    };
    return kFixed;
}

std::vector<std::string> ResponsePolicy::parse_origins(std::string_view list) {
    std::vector<std::string> out;
    while (!list.empty()) {
        const auto comma = list.find(',');
        const std::string_view entry = trim(list.substr(0, comma));
        list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
        if (entry.empty()) continue;
        const bool scheme = entry.rfind("http://", 0) == 0 || entry.rfind("https://", 0) == 0;
        const auto host = entry.substr(entry.find("//") + 2);
        if (entry != "*" && (!scheme || host.empty() || host.find('/') != std::string_view::npos))
            throw std::invalid_argument(fmt::format(
                "'{}' is not an origin such as https://app.example.com (scheme and host, "
                "no path) or *",
                entry));
        out.emplace_back(entry);
    }
    return out;
}

std::string ResponsePolicy::allowed(const std::string& origin) const {
    if (origin.empty()) return {};
    if (std::find(cors_origins.begin(), cors_origins.end(), origin) != cors_origins.end())
        return origin;
    if (std::find(cors_origins.begin(), cors_origins.end(), "*") != cors_origins.end()) return "*";
    return {};
}

void ResponsePolicy::add_headers(const Request& req, Headers& out) const {
    if (hsts_max_age_s > 0)
        out.emplace_back("Strict-Transport-Security",
                         fmt::format("max-age={}; includeSubDomains", hsts_max_age_s));
    if (cors_origins.empty()) return;
    out.emplace_back("Vary", "Origin");
    const std::string origin = allowed(req.header("origin"));
    if (origin.empty()) return;
    out.emplace_back("Access-Control-Allow-Origin", origin);
    out.emplace_back("Access-Control-Expose-Headers", std::string(kExposed));
    // Credentials (cookies, Authorization) only for an origin named in the list.
    if (origin != "*") out.emplace_back("Access-Control-Allow-Credentials", "true");
}

std::optional<Reply> ResponsePolicy::preflight(const Request& req) const {
    if (req.method != "OPTIONS" || req.header("origin").empty() ||
        req.header("access-control-request-method").empty())
        return std::nullopt;
    const std::string origin = req.header("origin");
    if (allowed(origin).empty())
        return error_response(
            403, "origin_not_allowed",
            fmt::format("the origin {} may not call this server (CAIRN_CORS_ORIGINS)", origin));
    Reply r{204, "text/plain", "", {}};
    r.headers.emplace_back("Access-Control-Allow-Methods", std::string(kMethods));
    const std::string asked = req.header("access-control-request-headers");
    r.headers.emplace_back("Access-Control-Allow-Headers",
                           asked.empty() ? std::string("Authorization, Content-Type") : asked);
    r.headers.emplace_back("Access-Control-Max-Age", "600");
    return r;
}

}  // namespace cairn::server
