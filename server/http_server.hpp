#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cairn::server {

struct Response;

// The answer to a request that its handler gives after returning (Request::later): the
// server waits for it without holding a pool thread. Answer once, from any thread, with
// answer(); or with then(), which runs `fn` on the handler pool (at once when called on
// the handler's own thread while it runs) and answers with what it returns, a generic 500
// for an exception. Should the last copy go unanswered, the request gets a 500.
class Later {
  public:
    virtual ~Later() = default;
    virtual void answer(Response response) = 0;
    virtual void then(std::function<Response()> fn) = 0;
    // `fn` gets the status once the answer is given (at once if it was): for metrics.
    virtual void on_answer(std::function<void(int status)> fn) = 0;
};

// A request as handlers see it: Beast stays inside http_server.cpp.
struct Request {
    std::string method;  // "GET", "POST", ...
    std::string target;  // path and query, as sent
    std::string body;
    std::string request_id;
    std::map<std::string, std::string> headers;  // names lower-cased
    std::string remote;                          // the peer's IP address
    bool websocket_upgrade = false;              // a WebSocket opening handshake

    std::string_view path() const;
    // The decoded value of query parameter `name`, if present.
    std::optional<std::string> query(std::string_view name) const;
    std::string header(std::string_view lower_name) const;
    // A Later to answer this request with (return Response::deferred(it)); null when the
    // request does not come from the server (a handler called directly): answer at once.
    std::shared_ptr<Later> later() const { return make_later ? make_later() : nullptr; }
    std::function<std::shared_ptr<Later>()> make_later;  // set by the server
};

struct Response {
    int status = 200;
    std::string content_type = "application/json";
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;
    // A streaming response (server-sent events): after the headers, the server calls
    // `next` on the handler pool again and again, writing each chunk, and pausing
    // `interval` whenever it returns an empty one; it ends when `next` returns nullopt,
    // the client goes away or the server stops. `body` is written first.
    std::function<std::optional<std::string>()> next;
    std::chrono::milliseconds interval{250};
    // Answer a WebSocket handshake (Request::websocket_upgrade) by upgrading: `status`
    // and `body` are ignored; the server sends each non-empty string `next` returns as a
    // text message, with the same polling as a stream, until `next` returns nullopt, the
    // client closes or the server stops. Messages from the client go to `on_message` (on
    // the pool); control frames (ping, close) are answered by the server.
    bool websocket = false;
    std::function<void(const std::string&)> on_message;
    // Answered later, through this (Request::later); every other field is ignored.
    std::shared_ptr<Later> later;
    static Response deferred(std::shared_ptr<Later> later) {
        Response r;
        r.later = std::move(later);
        return r;
    }
};

// Called on the worker pool, never on the I/O thread, so it may block on storage. An
// exception becomes a generic 500 (the text is logged, not sent). It may instead return
// Response::deferred and answer later (Later).
using Handler = std::function<Response(const Request&)>;

struct ServerOptions {
    std::string listen = "127.0.0.1:8080";              // host:port; port 0 picks a free one
    std::size_t work_threads = 4;                       // the bounded pool handlers run on
    std::size_t header_limit = std::size_t{16} * 1024;  // bytes; past it the request gets 431
    std::size_t body_limit = std::size_t{1024} * 1024;  // bytes; past it the request gets 413
    std::chrono::milliseconds read_timeout{30'000};     // for a whole request, and idle keep-alive
    std::chrono::seconds drain_timeout{10};             // for in-flight requests at shutdown
};

// The listen address is malformed or cannot be bound (in use, not permitted).
class ListenError : public std::runtime_error {
    using std::runtime_error::runtime_error;
};

// An HTTP/1.1 server with keep-alive, size limits and timeouts, on one I/O thread plus a
// pool for handlers. The constructor binds and listens (throwing ListenError), so a busy
// port is reported before anything else is set up.
class HttpServer {
  public:
    HttpServer(ServerOptions options, Handler handler);
    ~HttpServer();
    HttpServer(const HttpServer&) = delete;
    HttpServer& operator=(const HttpServer&) = delete;

    // "host:port" actually bound (with the real port when 0 was asked for).
    std::string local_address() const;

    // Serves until stop() or SIGINT/SIGTERM, then stops accepting, lets in-flight
    // requests finish (up to drain_timeout) and returns.
    void run();
    // Thread-safe; may be called from any thread, before or during run().
    void stop();

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace cairn::server
