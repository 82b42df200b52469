#include "server/router.hpp"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "common/version.hpp"
#include "storage/database.hpp"

namespace cairn::server {

using nlohmann::json;

Response error_response(int status, std::string_view code, std::string_view message) {
    json body = {{"error", {{"code", code}, {"message", message}, {"details", json::array()}}}};
    return Response{status, "application/json", body.dump()};
}

Response health(storage::Database& db) {
    json body = {{"backend", storage::to_string(db.backend())}, {"version", kVersion}};
    try {
        db.read("SELECT 1");
        body["status"] = "ok";
        body["database"] = "ok";
        return Response{200, "application/json", body.dump()};
    } catch (const std::exception& e) {
        spdlog::warn("health check: database did not answer: {}", e.what());
        body["status"] = "unavailable";
        body["database"] = "unreachable";
        return Response{503, "application/json", body.dump()};
    }
}

Handler make_router(storage::Database& db) {
    return [&db](const Request& req) -> Response {
        std::string_view path = req.target;
        if (auto q = path.find('?'); q != std::string_view::npos) path = path.substr(0, q);
        if (path == "/health") {
            if (req.method != "GET" && req.method != "HEAD") {
                return error_response(405, "method_not_allowed", "use GET /health");
            }
            return health(db);
        }
        return error_response(404, "not_found", "no such route");
    };
}

}  // namespace cairn::server
