#include "server/http/response.hpp"

#include <nlohmann/json.hpp>

namespace cairn::server {

int Response::status() const {
    if (const auto* r = std::get_if<Reply>(&kind)) return r->status;
    if (const auto* s = std::get_if<EventStream>(&kind)) return s->head.status;
    if (std::holds_alternative<WebSocket>(kind)) return 101;
    return 0;
}

Reply error_response(int status, std::string_view code, std::string_view message,
                     std::string_view details_json) {
    using nlohmann::json;
    json details = json::parse(details_json, nullptr, false);
    if (details.is_discarded()) details = json::array();
    const json body = {{"error", {{"code", code}, {"message", message}, {"details", details}}}};
    Reply r;
    r.status = status;
    r.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
    return r;
}

}  // namespace cairn::server
