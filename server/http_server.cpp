// The HTTP/1.1 server on Boost.Beast. The only translation unit that includes Beast.
//
// One I/O thread runs the acceptor and every session coroutine, so session bookkeeping
// needs no locks; handlers run on a bounded thread pool so a slow database never stalls
// the I/O thread.

#include "server/http_server.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <csignal>
#include <set>

#include "common/ids.hpp"
#include "common/version.hpp"

namespace cairn::server {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

tcp::endpoint parse_listen(const std::string& listen) {
    const auto colon = listen.rfind(':');
    if (colon == std::string::npos || colon + 1 == listen.size()) {
        throw ListenError(fmt::format("listen address '{}' is not HOST:PORT", listen));
    }
    std::string host = listen.substr(0, colon);
    const std::string port_text = listen.substr(colon + 1);
    unsigned port = 0;
    for (char c : port_text) {
        if (c < '0' || c > '9' || port > 65535) {
            throw ListenError(
                fmt::format("listen address '{}': port '{}' is not a number from 0 to 65535",
                            listen, port_text));
        }
        port = port * 10 + static_cast<unsigned>(c - '0');
    }
    if (port > 65535) {
        throw ListenError(fmt::format("listen address '{}': port must be from 0 to 65535", listen));
    }
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
        host = host.substr(1, host.size() - 2);
    if (host == "localhost") host = "127.0.0.1";
    if (host.empty() || host == "*") host = "0.0.0.0";
    boost::system::error_code ec;
    auto address = asio::ip::make_address(host, ec);
    if (ec)
        throw ListenError(
            fmt::format("listen address '{}': '{}' is not an IP address", listen, host));
    return {address, static_cast<unsigned short>(port)};
}

const std::string& json_error_body(int status) {
    static const std::string k400 =
        R"({"error":{"code":"bad_request","message":"malformed HTTP request","details":[]}})";
    static const std::string k413 =
        R"({"error":{"code":"payload_too_large","message":"request body exceeds the size limit","details":[]}})";
    static const std::string k431 =
        R"({"error":{"code":"headers_too_large","message":"request headers exceed the size limit","details":[]}})";
    static const std::string k500 =
        R"({"error":{"code":"internal","message":"internal server error","details":[]}})";
    switch (status) {
        case 400:
            return k400;
        case 413:
            return k413;
        case 431:
            return k431;
        default:
            return k500;
    }
}

}  // namespace

struct HttpServer::Impl {
    struct Session {
        beast::tcp_stream stream;
        bool busy = false;  // a request is being handled; shutdown lets it finish
    };

    Impl(ServerOptions o, Handler h)
        : options(std::move(o)), handler(std::move(h)), pool(options.work_threads) {}

    ServerOptions options;  // constant after construction
    Handler handler;        // constant after construction
    asio::io_context ioc{1};
    tcp::acceptor acceptor{ioc};
    asio::signal_set signals{ioc};
    asio::steady_timer drain{ioc};
    asio::thread_pool pool;
    std::set<Session*> sessions;  // I/O thread only
    bool stopping = false;        // I/O thread only

    Response call_handler(const Request& request) {
        try {
            return handler(request);
        } catch (const std::exception& e) {
            spdlog::error("request {} {} {} failed: {}", request.request_id, request.method,
                          request.target, e.what());
        } catch (...) {
            spdlog::error("request {} {} {} failed with an unknown exception", request.request_id,
                          request.method, request.target);
        }
        return Response{500, "application/json", json_error_body(500)};
    }

    asio::awaitable<void> write(Session& s, const Response& res, unsigned version, bool keep_alive,
                                const std::string& request_id, bool& ok) {
        http::response<http::string_body> msg{static_cast<http::status>(res.status), version};
        msg.set(http::field::server, fmt::format("cairn/{}", kVersion));
        msg.set(http::field::content_type, res.content_type);
        if (!request_id.empty()) msg.set("X-Request-Id", request_id);
        msg.keep_alive(keep_alive);
        msg.body() = res.body;
        msg.prepare_payload();
        s.stream.expires_after(options.read_timeout);
        auto [ec, n] = co_await http::async_write(s.stream, msg, kTuple);
        ok = !ec;
    }

    asio::awaitable<void> serve(tcp::socket socket) {
        Session s{beast::tcp_stream(std::move(socket))};
        sessions.insert(&s);
        beast::flat_buffer buffer;
        bool ok = true;
        while (ok && !stopping) {
            http::request_parser<http::string_body> parser;
            parser.header_limit(static_cast<std::uint32_t>(options.header_limit));
            parser.body_limit(options.body_limit);
            s.stream.expires_after(options.read_timeout);
            auto [ec, n] = co_await http::async_read(s.stream, buffer, parser, kTuple);
            if (ec) {
                int status = 0;
                if (ec == http::error::body_limit)
                    status = 413;
                else if (ec == http::error::header_limit)
                    status = 431;
                else if (ec.category() ==
                             http::make_error_code(http::error::bad_method).category() &&
                         ec != http::error::end_of_stream && ec != http::error::partial_message)
                    status = 400;
                if (status != 0) {
                    // Named, not temporaries: GCC 12 destroys temporaries inside a co_await
                    // expression twice.
                    const Response refusal{status, "application/json", json_error_body(status)};
                    const std::string no_id;
                    co_await write(s, refusal, 11, false, no_id, ok);
                }
                break;
            }

            const auto started = std::chrono::steady_clock::now();
            auto& req = parser.get();
            Request request{std::string(req.method_string()), std::string(req.target()),
                            std::move(req.body()), new_id()};
            s.busy = true;
            auto handle = [this, &request]() -> asio::awaitable<Response> {
                co_return call_handler(request);
            };
            Response res = co_await asio::co_spawn(pool, std::move(handle), asio::use_awaitable);
            s.busy = false;

            const bool keep_alive = req.keep_alive() && !stopping;
            co_await write(s, res, req.version(), keep_alive, request.request_id, ok);
            const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(
                std::chrono::steady_clock::now() - started);
            spdlog::info("{} {} {} {:.3f}ms id={}", request.method, request.target, res.status,
                         static_cast<double>(micros.count()) / 1000.0, request.request_id);
            if (!keep_alive) break;
        }
        beast::error_code ignored;
        s.stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
        sessions.erase(&s);
        if (stopping && sessions.empty()) drain.cancel();
    }

    asio::awaitable<void> accept_loop() {
        while (!stopping) {
            auto [ec, socket] = co_await acceptor.async_accept(kTuple);
            if (ec) {
                if (ec == asio::error::operation_aborted || !acceptor.is_open()) break;
                spdlog::warn("accept failed: {}", ec.message());
                continue;
            }
            asio::co_spawn(ioc, serve(std::move(socket)), asio::detached);
        }
    }

    // Runs on the I/O thread.
    void begin_stop() {
        if (stopping) return;
        stopping = true;
        beast::error_code ignored;
        acceptor.close(ignored);
        signals.cancel(ignored);
        // Idle keep-alive connections are closed now; busy ones finish their request.
        for (Session* s : sessions) {
            if (!s->busy) s->stream.socket().cancel(ignored);
        }
        if (sessions.empty()) return;
        drain.expires_after(options.drain_timeout);
        drain.async_wait([this](beast::error_code ec) {
            if (ec) return;  // cancelled: every session finished in time
            spdlog::warn("shutdown: {} connection(s) still busy after {}s; closing them",
                         sessions.size(), options.drain_timeout.count());
            ioc.stop();
        });
    }
};

HttpServer::HttpServer(ServerOptions options, Handler handler)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(handler))) {
    const tcp::endpoint endpoint = parse_listen(impl_->options.listen);
    beast::error_code ec;
    auto& acceptor = impl_->acceptor;
    acceptor.open(endpoint.protocol(), ec);
    if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor.bind(endpoint, ec);
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec)
        throw ListenError(
            fmt::format("cannot listen on {}: {}", impl_->options.listen, ec.message()));
}

HttpServer::~HttpServer() {
    impl_->pool.join();
}

std::string HttpServer::local_address() const {
    const auto ep = impl_->acceptor.local_endpoint();
    const auto host = ep.address().to_string();
    return ep.address().is_v6() ? fmt::format("[{}]:{}", host, ep.port())
                                : fmt::format("{}:{}", host, ep.port());
}

void HttpServer::run() {
    Impl& impl = *impl_;
    impl.signals.add(SIGINT);
    impl.signals.add(SIGTERM);
    impl.signals.async_wait([&impl](beast::error_code ec, int signal) {
        if (ec) return;
        spdlog::info("received signal {}; shutting down", signal);
        impl.begin_stop();
    });
    asio::co_spawn(impl.ioc, impl.accept_loop(), asio::detached);
    impl.ioc.run();
    impl.pool.join();
}

void HttpServer::stop() {
    asio::post(impl_->ioc, [impl = impl_.get()] { impl->begin_stop(); });
}

}  // namespace cairn::server
