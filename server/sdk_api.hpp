#pragma once

#include "server/http/router.hpp"

namespace cairn::engine {
class Engine;
}
namespace cairn::storage {
class Database;
}
namespace cairn::sdk {
class Apps;
}

namespace cairn::server {

class ApiKeys;

// The routes Inngest SDKs call (POST /fn/register, POST /e/{event_key}, GET /dev) and the
// apps API under /api/engine/apps (docs/sdk.md, docs/api.md). The references must outlive
// the router.
void add_sdk_routes(Router& router, storage::Database& db, sdk::Apps& apps, engine::Engine& engine,
                    ApiKeys& keys);

}  // namespace cairn::server
