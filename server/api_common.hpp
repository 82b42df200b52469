#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "server/http/request.hpp"
#include "server/http/response.hpp"

// What the engine API's handlers share: the JSON reply, the standard 400s, and the
// readers of bodies, times and statuses.
namespace cairn::server::api {

using nlohmann::json;

Reply json_response(int status, const json& body);
// A bad-input error (400 validation_failed) with one detail per field.
Reply invalid(std::string_view message, const json& details = json::array());
// The request body as JSON; nullopt with `error` set (400 invalid_json) when it is not.
std::optional<json> parse_body(const Request& req, Reply& error);
// "1700000000000" (epoch ms) or RFC 3339 ("2026-11-22T10:00:00Z").
std::optional<std::int64_t> parse_time(std::string_view text);
// queued, running, sleeping, waiting, completed, failed, cancelled.
const std::set<std::string>& known_statuses();
inline constexpr std::string_view kStatusesMessage =
    "must be one of queued, running, sleeping, waiting, completed, failed, cancelled";

}  // namespace cairn::server::api
