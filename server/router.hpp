#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "server/http_server.hpp"

namespace cairn::storage {
class Database;
}
namespace cairn::engine {
class Engine;
}

namespace cairn::server {

class ApiKeys;
class Metrics;

// Path parameters by name, e.g. {"id": "0190..."} for /api/engine/runs/{id}.
using Params = std::map<std::string, std::string, std::less<>>;

// Who may call a route: anyone, a key of any scope (events and admin), or admin keys.
enum class Auth { none, events, admin };

// The one error shape of every route: {"error":{"code","message","details"}}.
// `details_json` is a JSON array.
Response error_response(int status, std::string_view code, std::string_view message,
                        std::string_view details_json = "[]");

// Matches method and path to a route, checks its API key, and calls it. Unknown paths
// are 404, known paths with another method 405, a missing or unknown key 401, a key
// without the scope 403. Counts every request in `metrics` by route pattern and status.
class Router {
  public:
    using Fn = std::function<Response(const Request&, const Params&)>;
    struct Route {
        std::string method;
        std::string pattern;  // segments in braces are parameters: /api/engine/runs/{id}
        Auth auth;
        Fn fn;
        std::vector<std::string> segments = {};  // the pattern's, split once by add()
        bool trailing_slash = false;
    };

    Router(ApiKeys* keys, Metrics* metrics) : keys_(keys), metrics_(metrics) {}
    void add(std::string method, std::string pattern, Auth auth, Fn fn);
    Response dispatch(const Request& request) const;
    const std::vector<Route>& routes() const { return routes_; }

  private:
    ApiKeys* keys_;
    Metrics* metrics_;
    std::vector<Route> routes_;
};

// GET /health: liveness plus a database round trip. 200 with {"status":"ok",...} or 503
// with {"status":"unavailable",...} when the database does not answer.
Response health(storage::Database& db);

// Every route of the server: /health, /metrics, and the engine API under /api/engine/
// (docs/api.md). The references must outlive the router.
std::unique_ptr<Router> make_router(storage::Database& db, engine::Engine& engine, ApiKeys& keys,
                                    Metrics& metrics);

// The OpenAPI 3 document served at /api/engine/openapi.json.
std::string_view openapi_json();

}  // namespace cairn::server
