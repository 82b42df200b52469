#pragma once

// Part of Cairn's public API (docs/library.md): the engine API and the inspector served
// from the program that embeds Cairn.

#include <cstddef>
#include <memory>
#include <string>

#include "cairn/engine.hpp"

namespace cairn {

struct ServeOptions {
    std::string listen = "127.0.0.1:8080";  // host:port; port 0 picks a free one
    std::size_t threads = 4;                // request handler threads
    std::string metrics_key;                // when set, /metrics needs Authorization: Bearer KEY
};

// Serves GET /health, /metrics, the engine API under /api/engine/ and the inspector at /
// for `engine`, as `cairn serve` does. The constructor binds the address (throwing
// std::runtime_error when it cannot), so a busy port is reported at once.
class Server {
  public:
    Server(Database& db, Engine& engine, ServeOptions options = {});
    ~Server();  // stops serving
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    // "host:port" as bound (with the real port when 0 was asked for).
    std::string address() const;
    // Serves until stop() or SIGINT/SIGTERM, then lets requests in flight finish.
    void run();
    // From any thread.
    void stop();

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace cairn
