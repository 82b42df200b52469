// Route matching: literal segments, {parameters}, the trailing slash, 404 and 405.
#include "server/http/router.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace cairn::server;

namespace {

Reply echo(const Params& params, std::string what) {
    Reply r;
    r.body = what;
    for (const auto& [k, v] : params) r.body += " " + k + "=" + v;
    return r;
}

Response get(const Router& router, std::string method, std::string target) {
    Request req;
    req.method = std::move(method);
    req.target = std::move(target);
    return router.dispatch(req);
}

}  // namespace

TEST_CASE("the router matches literal segments and parameters, and tells 404 from 405") {
    Router router(nullptr, nullptr);
    router.add("GET", "/api/runs", Auth::none,
               [](const Request&, const Params& p) { return echo(p, "list"); });
    router.add("GET", "/api/runs/{id}", Auth::none,
               [](const Request&, const Params& p) { return echo(p, "one"); });
    router.add("POST", "/api/runs/{id}/retry", Auth::none,
               [](const Request&, const Params& p) { return echo(p, "retry"); });
    router.add("GET", "/api/runs/{id}/steps/{name}", Auth::none,
               [](const Request&, const Params& p) { return echo(p, "step"); });
    router.add("GET", "/inspector/", Auth::none,
               [](const Request&, const Params& p) { return echo(p, "ui"); });

    CHECK(get(router, "GET", "/api/runs").reply()->body == "list");
    CHECK(get(router, "GET", "/api/runs?limit=5").reply()->body == "list");
    CHECK(get(router, "GET", "/api/runs/r1").reply()->body == "one id=r1");
    CHECK(get(router, "HEAD", "/api/runs/r1").reply()->body == "one id=r1");
    CHECK(get(router, "POST", "/api/runs/r2/retry").reply()->body == "retry id=r2");
    CHECK(get(router, "GET", "/api/runs/r3/steps/charge").reply()->body ==
          "step id=r3 name=charge");
    CHECK(get(router, "GET", "/inspector/").reply()->body == "ui");

    // A parameter does not match a literal, nor a literal another literal.
    CHECK(get(router, "GET", "/api/runs/r1/steps").status() == 404);
    CHECK(get(router, "GET", "/api/jobs/r1").status() == 404);
    CHECK(get(router, "GET", "/api").status() == 404);
    // The trailing slash is significant both ways.
    CHECK(get(router, "GET", "/api/runs/").status() == 404);
    CHECK(get(router, "GET", "/inspector").status() == 404);

    const auto wrong = get(router, "DELETE", "/api/runs/r1/retry");
    CHECK(wrong.status() == 405);
    REQUIRE(wrong.reply());
    REQUIRE(wrong.reply()->headers.size() == 1);
    CHECK(wrong.reply()->headers[0] == std::pair<std::string, std::string>{"Allow", "POST"});
}

TEST_CASE("credentials in query strings are redacted for the log") {
    using cairn::server::redact_target;
    CHECK(redact_target("/api/v1/ws?token=eyJ.abc.def") == "/api/v1/ws?token=REDACTED");
    CHECK(redact_target("/x?a=1&Access_Token=s3cret&b=2") == "/x?a=1&Access_Token=REDACTED&b=2");
    CHECK(redact_target("/e/ck_0123abcd") == "/e/REDACTED");
    CHECK(redact_target("/e/ck_0123abcd?key=x&a=1") == "/e/REDACTED?key=REDACTED&a=1");
    CHECK(redact_target("/events/x") == "/events/x");
    CHECK(redact_target("/x?api%5Fkey=ck_1&q=token") == "/x?api%5Fkey=REDACTED&q=token");
    CHECK(redact_target("/x?token") == "/x?token");
    CHECK(redact_target("/runs?status=failed") == "/runs?status=failed");
}
