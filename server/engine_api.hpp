#pragma once

#include <memory>
#include <string_view>

#include "server/http/router.hpp"

namespace cairn::storage {
class Database;
}
namespace cairn::engine {
class Engine;
}

namespace cairn::server {

class ApiKeys;
class Metrics;

// GET /health: liveness plus a database round trip. 200 with {"status":"ok",...} or 503
// with {"status":"unavailable",...} when the database does not answer.
Reply health(storage::Database& db);

// Every route of the server: /health, /metrics, the inspector and the engine API under
// /api/engine/ (docs/api.md), with `keys` checking the routes' API keys and `metrics`
// counting every request. The references must outlive the router.
std::unique_ptr<Router> make_router(storage::Database& db, engine::Engine& engine, ApiKeys& keys,
                                    Metrics& metrics);

// The OpenAPI 3 document served at /api/engine/openapi.json.
std::string_view openapi_json();

}  // namespace cairn::server
