#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "server/http/request.hpp"
#include "server/http/response.hpp"

namespace cairn::server {

// What every response carries besides its own headers: the browser security headers, HSTS
// when configured, and CORS for the origins allowed.
struct ResponsePolicy {
    // Exact origins ("https://app.example.com") whose pages may call the API with
    // credentials, or "*" for any page without credentials. Empty: no cross-origin access.
    std::vector<std::string> cors_origins;
    int hsts_max_age_s = 0;  // Strict-Transport-Security max-age; 0 sends none

    // Parses a comma-separated origin list; throws std::invalid_argument naming a bad entry.
    static std::vector<std::string> parse_origins(std::string_view list);

    // The headers every response carries (browser security headers): one shared list.
    static const Headers& fixed_headers();
    // Appends the headers that depend on configuration and `req` (HSTS, CORS).
    void add_headers(const Request& req, Headers& out) const;
    // The answer to a CORS preflight (OPTIONS with Origin and
    // Access-Control-Request-Method): 204 for an allowed origin, 403 otherwise; nullopt
    // for any other request.
    std::optional<Reply> preflight(const Request& req) const;

  private:
    // The Access-Control-Allow-Origin value for `origin`; empty when it is not allowed.
    std::string allowed(const std::string& origin) const;
};

}  // namespace cairn::server
