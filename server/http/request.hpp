#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace cairn::server {

class Later;

// A request as handlers see it: the server's wire library stays inside the server.
struct Request {
    std::string method;  // "GET", "POST", ...
    std::string target;  // path and query, as sent
    std::string body;
    std::string request_id;
    std::map<std::string, std::string> headers;  // names lower-cased
    std::string remote;                          // the peer's IP address
    // The client's address as limits key on (server/client_address.hpp): the peer, or the
    // address a trusted proxy forwarded; an IPv6 address as its /64. Set by the server.
    std::string client;
    bool websocket_upgrade = false;  // a WebSocket opening handshake

    std::string_view path() const;
    // The decoded value of query parameter `name`, if present.
    std::optional<std::string> query(std::string_view name) const;
    std::string header(std::string_view lower_name) const;
    // A Later to answer this request with (return Response::deferred(it)); null when the
    // request does not come from a server (a handler called directly): answer at once.
    std::shared_ptr<Later> later() const { return make_later ? make_later() : nullptr; }
    std::function<std::shared_ptr<Later>()> make_later;  // set by the server
};

// `in` with %XX escapes decoded and '+' read as a space (query strings).
std::string percent_decode(std::string_view in);

// `target` with the values of credential-bearing query parameters (token, access_token,
// refresh_token, key, api_key, password, secret) and the key of an SDK's /e/{key}
// replaced by "REDACTED", for logs.
std::string redact_target(std::string_view target);

}  // namespace cairn::server
