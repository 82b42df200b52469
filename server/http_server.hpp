#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

#include "server/client_address.hpp"
#include "server/http/request.hpp"
#include "server/http/response.hpp"
#include "server/response_policy.hpp"

namespace cairn::server {

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
    TrustedProxies trusted_proxies;                     // whose X-Forwarded-For is believed
    // Open connections (WebSockets and streams included) and, from one client address
    // (trusted proxies exempt), per client; past either a new one gets 503 and is closed.
    std::size_t max_connections = 4096;
    int max_connections_per_client = 256;
    // Requests per minute from one client address (a token bucket; that many at once);
    // past it 429 with Retry-After. 0: no limit.
    int requests_per_minute = 0;
    ResponsePolicy policy;  // security headers, HSTS and CORS on every response
};

// The listen address is malformed or cannot be bound (in use, not permitted).
class ListenError : public std::runtime_error {
    using std::runtime_error::runtime_error;
};

// An HTTP/1.1 server with keep-alive, size and connection limits and timeouts (a client
// that takes no part of a response for read_timeout is closed), on one I/O thread plus a
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
