#include "server/api_common.hpp"

#include <charconv>

#include "common/json.hpp"
#include "common/time.hpp"

namespace cairn::server::api {

Reply json_response(int status, const json& body) {
    Reply r;
    r.status = status;
    r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
    return r;
}

Reply invalid(std::string_view message, const json& details) {
    return error_response(400, "validation_failed", message, details.dump());
}

std::optional<json> parse_body(const Request& req, Reply& error) {
    std::string problem;
    json body = parse_untrusted_json(req.body, problem);
    if (body.is_discarded()) {
        error = error_response(400, "invalid_json", "the request body: " + problem);
        return std::nullopt;
    }
    return body;
}

std::optional<std::int64_t> parse_time(std::string_view text) {
    std::int64_t ms = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), ms);
    if (ec == std::errc{} && end == text.data() + text.size()) return ms;
    return parse_rfc3339(text);
}

const std::set<std::string>& known_statuses() {
    static const std::set<std::string> kStatuses = {"queued",    "running", "sleeping", "waiting",
                                                    "completed", "failed",  "cancelled"};
    return kStatuses;
}

}  // namespace cairn::server::api
