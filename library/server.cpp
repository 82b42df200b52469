// The public Server: the engine API, /health, /metrics and the inspector served from the
// embedding program, wired as `cairn serve` wires them.

#include "cairn/server.hpp"

#include <stdexcept>

#include "library/impl.hpp"
#include "server/api_keys.hpp"
#include "server/engine_api.hpp"
#include "server/http_server.hpp"
#include "server/metrics.hpp"

namespace cairn {

struct Server::Impl {
    Impl(Database::Impl& db, engine::Engine& engine, const ServeOptions& o)
        : keys(*db.db),
          metrics(o.metrics_key),
          router(server::make_router(*db.db, engine, keys, metrics)) {
        server::ServerOptions options;
        options.listen = o.listen;
        options.work_threads = o.threads;
        try {
            http = std::make_unique<server::HttpServer>(
                options, [this](const server::Request& req) { return router->dispatch(req); });
        } catch (const server::ListenError& e) {
            throw std::runtime_error(e.what());
        }
    }

    server::ApiKeys keys;
    server::Metrics metrics;
    std::unique_ptr<server::Router> router;
    std::unique_ptr<server::HttpServer> http;  // last: stopped before what it serves ends
};

Server::Server(Database& db, Engine& engine, ServeOptions options)
    : impl_(std::make_unique<Impl>(*db.impl_, engine.impl_->engine, options)) {}

Server::~Server() {
    impl_->http->stop();
}

std::string Server::address() const {
    return impl_->http->local_address();
}

void Server::run() {
    impl_->http->run();
}

void Server::stop() {
    impl_->http->stop();
}

}  // namespace cairn
