#include "server/response_policy.hpp"

#include <doctest/doctest.h>

#include <stdexcept>
#include <string>

using cairn::server::Headers;
using cairn::server::Request;
using cairn::server::ResponsePolicy;

namespace {

Request from(const std::string& origin, const std::string& method = "GET") {
    Request r;
    r.method = method;
    r.target = "/api/v1/tickets";
    if (!origin.empty()) r.headers["origin"] = origin;
    return r;
}

std::string header(const Headers& h, const std::string& name) {
    for (const auto& [n, v] : h)
        if (n == name) return v;
    return "";
}

}  // namespace

TEST_CASE("every response carries the browser security headers") {
    const auto& fixed = ResponsePolicy::fixed_headers();
    CHECK(header(fixed, "X-Content-Type-Options") == "nosniff");
    CHECK(header(fixed, "Referrer-Policy") == "no-referrer");
    CHECK(header(fixed, "X-Frame-Options") == "SAMEORIGIN");
    CHECK(header(fixed, "Content-Security-Policy").find("frame-ancestors 'self'") !=
          std::string::npos);
    ResponsePolicy none;
    Headers h;
    none.add_headers(from("https://evil.test"), h);
    CHECK(h.empty());  // no HSTS, no CORS unless configured
    none.hsts_max_age_s = 600;
    none.add_headers(from(""), h);
    CHECK(header(h, "Strict-Transport-Security") == "max-age=600; includeSubDomains");
}

TEST_CASE("a listed origin gets credentials; * gets any origin without them") {
    ResponsePolicy p;
    p.cors_origins =
        ResponsePolicy::parse_origins("https://app.example.test, http://localhost:3000");
    Headers h;
    p.add_headers(from("https://app.example.test"), h);
    CHECK(header(h, "Access-Control-Allow-Origin") == "https://app.example.test");
    CHECK(header(h, "Access-Control-Allow-Credentials") == "true");
    CHECK(header(h, "Vary") == "Origin");
    h.clear();
    p.add_headers(from("https://evil.test"), h);
    CHECK(header(h, "Access-Control-Allow-Origin").empty());

    p.cors_origins = ResponsePolicy::parse_origins("*");
    h.clear();
    p.add_headers(from("https://evil.test"), h);
    CHECK(header(h, "Access-Control-Allow-Origin") == "*");
    CHECK(header(h, "Access-Control-Allow-Credentials").empty());
}

TEST_CASE("preflights are answered for allowed origins and refused for others") {
    ResponsePolicy p;
    p.cors_origins = {"https://app.example.test"};
    auto asked = from("https://app.example.test", "OPTIONS");
    asked.headers["access-control-request-method"] = "POST";
    asked.headers["access-control-request-headers"] = "authorization, content-type";
    const auto ok = p.preflight(asked);
    REQUIRE(ok);
    CHECK(ok->status == 204);
    CHECK(header(ok->headers, "Access-Control-Allow-Headers") == "authorization, content-type");
    CHECK(header(ok->headers, "Access-Control-Allow-Methods").find("POST") != std::string::npos);
    auto other = from("https://evil.test", "OPTIONS");
    other.headers["access-control-request-method"] = "POST";
    CHECK(p.preflight(other)->status == 403);
    CHECK_FALSE(p.preflight(from("https://app.example.test", "OPTIONS")));  // not a preflight
}

TEST_CASE("origins must be a scheme and a host") {
    CHECK_THROWS_AS(ResponsePolicy::parse_origins("app.example.test"), std::invalid_argument);
    CHECK_THROWS_AS(ResponsePolicy::parse_origins("https://app.example.test/path"),
                    std::invalid_argument);
    CHECK(ResponsePolicy::parse_origins(" , ").empty());
}
