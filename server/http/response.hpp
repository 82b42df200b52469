#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace cairn::server {

using Headers = std::vector<std::pair<std::string, std::string>>;

// A plain answer: status, body and headers.
struct Reply {
    int status = 200;
    std::string content_type = "application/json";
    std::string body;
    Headers headers;
};

// Server-sent events: after the head's headers and body, the server calls `next` on the
// handler pool again and again, writing each chunk and pausing `interval` whenever it
// returns an empty one; the stream ends when `next` returns nullopt, the client goes away
// or the server stops.
struct EventStream {
    Reply head;
    std::function<std::optional<std::string>()> next;
    std::chrono::milliseconds interval{250};
};

// The answer to a WebSocket handshake (Request::websocket_upgrade): the connection is
// upgraded, and each non-empty string `next` returns is sent as a text message, with the
// pauses of an EventStream, until `next` returns nullopt, the client closes or the server
// stops. Messages from the client go to `on_message` (on the pool); control frames (ping,
// close) are the server's.
struct WebSocket {
    std::function<std::optional<std::string>()> next;
    std::function<void(const std::string&)> on_message;
    std::chrono::milliseconds interval{250};
};

struct Response;

// The answer to a request that its handler gives after returning (Request::later): the
// server waits for it without holding a pool thread. Answer once, from any thread, with
// answer(); or with then(), which runs `fn` on the handler pool (at once when called on
// the handler's own thread while it runs) and answers with what it returns, a generic 500
// for an exception. Should the last copy go unanswered, the request gets a 500.
class Later {
  public:
    virtual ~Later() = default;
    virtual void answer(Reply reply) = 0;
    virtual void then(std::function<Reply()> fn) = 0;
    // `fn` gets the status once the answer is given (at once if it was): for metrics.
    virtual void on_answer(std::function<void(int status)> fn) = 0;
};

// An answer given later, through `later` (Request::later).
struct Deferred {
    std::shared_ptr<Later> later;
};

// What a handler returns: one kind of answer.
struct Response {
    std::variant<Reply, EventStream, WebSocket, Deferred> kind;

    Response() = default;
    Response(Reply r) : kind(std::move(r)) {}        // NOLINT(google-explicit-constructor)
    Response(EventStream s) : kind(std::move(s)) {}  // NOLINT(google-explicit-constructor)
    Response(WebSocket w) : kind(std::move(w)) {}    // NOLINT(google-explicit-constructor)
    static Response deferred(std::shared_ptr<Later> later) { return Deferred{std::move(later)}; }

    // The plain reply; null for another kind.
    const Reply* reply() const { return std::get_if<Reply>(&kind); }
    Reply* reply() { return std::get_if<Reply>(&kind); }
    // The status sent now: the reply's, the stream's head's, 101 for an upgrade; 0 for an
    // answer given later.
    int status() const;

  private:
    Response(Deferred d) : kind(std::move(d)) {}
};

// The one error shape of every route: {"error":{"code","message","details"}}.
// `details_json` is a JSON array.
Reply error_response(int status, std::string_view code, std::string_view message,
                     std::string_view details_json = "[]");

}  // namespace cairn::server
