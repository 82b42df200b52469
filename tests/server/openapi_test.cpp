#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <set>

#include "engine/engine.hpp"
#include "sdk/apps.hpp"
#include "server/api_keys.hpp"
#include "server/engine_api.hpp"
#include "server/metrics.hpp"
#include "server/sdk_api.hpp"
#include "storage/database.hpp"

using namespace cairn;

TEST_CASE("every engine API route is documented in the OpenAPI document, and nothing else is") {
    auto db = storage::Database::open("sqlite::memory:");
    engine::SystemClock clock;
    engine::Engine eng(*db, clock);
    server::ApiKeys keys(*db);
    server::Metrics metrics;
    auto router = server::make_router(*db, eng, keys, metrics);
    sdk::Apps apps(*db, eng, {});
    server::add_sdk_routes(*router, *db, apps, eng, keys);

    const auto doc = nlohmann::json::parse(server::openapi_json());
    CHECK(doc["openapi"].get<std::string>().starts_with("3."));

    std::set<std::pair<std::string, std::string>> routes;
    for (const auto& r : router->routes()) {
        if (!r.pattern.starts_with("/api/engine/")) continue;
        std::string method = r.method;
        for (char& c : method) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        routes.emplace(r.pattern, method);
        CAPTURE(r.pattern);
        CAPTURE(method);
        CHECK(doc["paths"].contains(r.pattern));
        if (doc["paths"].contains(r.pattern)) CHECK(doc["paths"][r.pattern].contains(method));
    }
    CHECK(routes.size() >= 10);
    for (const auto& [path, ops] : doc["paths"].items()) {
        for (const auto& [method, op] : ops.items()) {
            CAPTURE(path);
            CAPTURE(method);
            CHECK(routes.contains({path, method}));
        }
    }
}
