#pragma once

#include <string_view>

#include "server/http_server.hpp"

namespace cairn::storage {
class Database;
}

namespace cairn::server {

// The one error shape of every route: {"error":{"code","message","details"}}.
Response error_response(int status, std::string_view code, std::string_view message);

// GET /health: liveness plus a database round trip. 200 with {"status":"ok",...} or 503
// with {"status":"unavailable",...} when the database does not answer.
Response health(storage::Database& db);

// The server's routes. `db` must outlive the handler.
Handler make_router(storage::Database& db);

}  // namespace cairn::server
