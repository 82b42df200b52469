// The HTTP/1.1 server on Boost.Beast. The only translation unit that includes Beast.
//
// One I/O thread runs the acceptor and every session coroutine, so session bookkeeping
// needs no locks; handlers run on a bounded thread pool so a slow database never stalls
// the I/O thread.

#include "server/http_server.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <csignal>
#include <mutex>
#include <set>
#include <thread>

#include "common/ids.hpp"
#include "common/rate_limiter.hpp"
#include "common/slots.hpp"
#include "common/version.hpp"
#include "server/client_address.hpp"

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

std::int64_t steady_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

const std::string& json_error_body(int status) {
    static const std::string k400 =
        R"({"error":{"code":"bad_request","message":"malformed HTTP request","details":[]}})";
    static const std::string k413 =
        R"({"error":{"code":"payload_too_large","message":"request body exceeds the size limit","details":[]}})";
    static const std::string k431 =
        R"({"error":{"code":"headers_too_large","message":"request headers exceed the size limit","details":[]}})";
    static const std::string k426 =
        R"({"error":{"code":"upgrade_required","message":"this route speaks WebSocket: send an Upgrade request","details":[]}})";
    static const std::string k500 =
        R"({"error":{"code":"internal","message":"internal server error","details":[]}})";
    switch (status) {
        case 400:
            return k400;
        case 413:
            return k413;
        case 426:
            return k426;
        case 431:
            return k431;
        default:
            return k500;
    }
}

// What a deferred answer (Later) and the session waiting for it share.
struct Answer {
    std::mutex mu;
    bool given = false;                 // guarded by mu
    int status = 0;                     // guarded by mu, once given
    std::optional<Reply> response;      // given, the session not yet waiting; guarded by mu
    std::function<void(Reply)> waiter;  // the session's, once it waits; guarded by mu
    std::vector<std::function<void(int)>> observers;  // guarded by mu

    void give(Reply r) {
        std::vector<std::function<void(int)>> to_tell;
        {
            std::lock_guard lock(mu);
            if (given) return;
            given = true;
            status = r.status;
            to_tell.swap(observers);
        }
        for (const auto& fn : to_tell) fn(r.status);
        std::function<void(Reply)> w;
        {
            std::lock_guard lock(mu);
            if (!waiter) {
                response = std::move(r);
                return;
            }
            w = std::move(waiter);
        }
        w(std::move(r));
    }
};

class LaterAnswer final : public Later, public std::enable_shared_from_this<LaterAnswer> {
  public:
    LaterAnswer(std::shared_ptr<Answer> answer, asio::thread_pool& pool)
        : answer_(std::move(answer)), pool_(pool), handler_thread_(std::this_thread::get_id()) {}
    ~LaterAnswer() override { answer_->give(Reply{500, "application/json", json_error_body(500)}); }
    LaterAnswer(const LaterAnswer&) = delete;
    LaterAnswer& operator=(const LaterAnswer&) = delete;

    void answer(Reply reply) override { answer_->give(std::move(reply)); }

    void then(std::function<Reply()> fn) override {
        if (std::this_thread::get_id() == handler_thread_ && handler_running_) {
            answer(run(fn));
            return;
        }
        asio::post(pool_,
                   [self = shared_from_this(), fn = std::move(fn)] { self->answer(run(fn)); });
    }

    void on_answer(std::function<void(int)> fn) override {
        std::unique_lock lock(answer_->mu);
        if (!answer_->given) {
            answer_->observers.push_back(std::move(fn));
            return;
        }
        const int status = answer_->status;
        lock.unlock();
        fn(status);
    }

    // Read and written on the handler's thread only.
    void handler_returned() { handler_running_ = false; }

  private:
    static Reply run(const std::function<Reply()>& fn) {
        try {
            return fn();
        } catch (const std::exception& e) {
            spdlog::error("a deferred answer failed: {}", e.what());
        } catch (...) {
            spdlog::error("a deferred answer failed with an unknown exception");
        }
        return Reply{500, "application/json", json_error_body(500)};
    }

    std::shared_ptr<Answer> answer_;
    asio::thread_pool& pool_;
    const std::thread::id handler_thread_;
    bool handler_running_ = true;
};

}  // namespace

struct HttpServer::Impl {
    struct Session {
        beast::tcp_stream stream;
        bool busy = false;  // a request is being handled; shutdown lets it finish
    };

    Impl(ServerOptions o, Handler h)
        : options(std::move(o)),
          handler(std::move(h)),
          pool(options.work_threads),
          per_client(options.max_connections_per_client),
          requests(options.requests_per_minute) {}

    ServerOptions options;  // constant after construction
    Handler handler;        // constant after construction
    asio::io_context ioc{1};
    tcp::acceptor acceptor{ioc};
    asio::signal_set signals{ioc};
    asio::steady_timer drain{ioc};
    asio::thread_pool pool;
    std::set<Session*> sessions;  // I/O thread only
    bool stopping = false;        // I/O thread only
    std::size_t connections = 0;  // accepted and not yet ended; I/O thread only
    Slots per_client;             // open connections per client address
    RateLimiter requests;         // requests per client address
    std::chrono::steady_clock::time_point last_refusal_log{};  // I/O thread only
    std::size_t refusals_unlogged = 0;                         // I/O thread only
    // Refused connections being read to their end; past the cap they are closed at once.
    static constexpr std::size_t kMaxLingering = 64;
    std::size_t lingering = 0;  // I/O thread only

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
        return Reply{500, "application/json", json_error_body(500)};
    }

    // The fixed and `policy` headers come first; the reply's own replace any of the same name.
    asio::awaitable<void> write(Session& s, const Reply& res, const Headers& policy,
                                unsigned version, bool keep_alive, const std::string& request_id,
                                bool& ok) {
        http::response<http::string_body> msg{static_cast<http::status>(res.status), version};
        msg.set(http::field::server, fmt::format("cairn/{}", kVersion));
        msg.set(http::field::content_type, res.content_type);
        if (!request_id.empty()) msg.set("X-Request-Id", request_id);
        for (const auto& [name, value] : ResponsePolicy::fixed_headers()) msg.set(name, value);
        for (const auto& [name, value] : policy) msg.insert(name, value);
        for (const auto& [name, value] : res.headers) msg.set(name, value);
        msg.keep_alive(keep_alive);
        // 1xx, 204 and 304 carry no body and must not carry a length (RFC 9110, 8.6);
        // Beast's prepare_payload would say "Content-Length: 0".
        const int status_class = res.status / 100;
        if (status_class != 1 && res.status != 204 && res.status != 304) {
            msg.body() = res.body;
            msg.prepare_payload();
        }
        // Beast's serializer formats the response into one buffer here, and one plain
        // write sends it: its composed asynchronous write walked the same buffers through
        // several layers of views on every step, half of the I/O thread's instructions.
        std::string wire;
        wire.reserve(256 + res.body.size());
        http::response_serializer<http::string_body> serializer{msg};
        beast::error_code ec;
        do {
            serializer.next(ec, [&](beast::error_code& visit_ec, const auto& buffers) {
                visit_ec = {};
                for (const auto b : beast::buffers_range_ref(buffers))
                    wire.append(static_cast<const char*>(b.data()), b.size());
                serializer.consume(beast::buffer_bytes(buffers));
            });
        } while (!ec && !serializer.is_done());
        if (ec) {
            ok = false;
            co_return;
        }
        s.stream.expires_after(options.read_timeout);
        auto [wec, n] = co_await asio::async_write(s.stream, asio::buffer(wire), kTuple);
        ok = !wec;
    }

    // The answer a handler gives later (LaterAnswer), resumed on the I/O thread.
    // The caller keeps `answer` until this returns. No shared_ptr is copied here: GCC 12
    // destroys a temporary made in a co_await expression twice.
    static asio::awaitable<Reply> wait(Answer* answer) {
        co_return co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(Reply)>(
            [answer](auto handler) {
                auto h = std::make_shared<decltype(handler)>(std::move(handler));
                auto resume = [h](Reply r) {
                    auto ex = asio::get_associated_executor(*h);
                    asio::post(ex, [h, r = std::move(r)]() mutable { (*h)(std::move(r)); });
                };
                std::unique_lock lock(answer->mu);
                if (answer->response) {
                    Reply r = std::move(*answer->response);
                    lock.unlock();
                    resume(std::move(r));
                    return;
                }
                answer->waiter = std::move(resume);
            },
            asio::use_awaitable);
    }

    static void log_access(const Request& request, int status,
                           std::chrono::steady_clock::time_point started) {
        const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(
            std::chrono::steady_clock::now() - started);
        spdlog::info("{} {} {} {:.3f}ms id={}", request.method, redact_target(request.target),
                     status, static_cast<double>(micros.count()) / 1000.0, request.request_id);
    }

    // Writes a streaming response: headers without a length (the body ends when the
    // connection closes), then every chunk `next` produces, on the pool, until it ends.
    asio::awaitable<void> stream(Session& s, const EventStream& res, const Headers& policy,
                                 unsigned version, const std::string& request_id) {
        http::response<http::empty_body> head{static_cast<http::status>(res.head.status), version};
        head.set(http::field::server, fmt::format("cairn/{}", kVersion));
        head.set(http::field::content_type, res.head.content_type);
        head.set(http::field::cache_control, "no-store");
        head.set("X-Request-Id", request_id);
        for (const auto& [name, value] : ResponsePolicy::fixed_headers()) head.set(name, value);
        for (const auto& [name, value] : policy) head.insert(name, value);
        for (const auto& [name, value] : res.head.headers) head.set(name, value);
        head.keep_alive(false);
        http::response_serializer<http::empty_body> serializer{head};
        s.stream.expires_never();
        auto [hec, hn] = co_await http::async_write_header(s.stream, serializer, kTuple);
        if (hec) co_return;
        std::string chunk = res.head.body;
        asio::steady_timer pause(ioc);
        while (!stopping) {
            if (!chunk.empty()) {
                s.stream.expires_after(options.read_timeout);
                auto [wec, wn] = co_await asio::async_write(s.stream, asio::buffer(chunk), kTuple);
                if (wec) break;
            } else {
                pause.expires_after(res.interval);
                co_await pause.async_wait(kTuple);
                if (stopping) break;
            }
            auto produce = [&res]() -> asio::awaitable<std::optional<std::string>> {
                co_return res.next();
            };
            s.busy = true;
            std::optional<std::string> next;
            try {
                next = co_await asio::co_spawn(pool, std::move(produce), asio::use_awaitable);
            } catch (const std::exception& e) {
                spdlog::warn("stream {} ended by an error: {}", request_id, e.what());
            }
            s.busy = false;
            if (!next) break;
            chunk = std::move(*next);
        }
        beast::error_code ignored;
        s.stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    }

    // Upgrades the connection to a WebSocket and pumps `res.next` into it until it ends,
    // the peer closes or the server stops. A reader coroutine runs beside the writer so
    // pings and the close handshake are answered and client messages delivered.
    asio::awaitable<void> websocket(Session& s, http::request<http::string_body> req, WebSocket res,
                                    const std::string& request_id) {
        namespace ws = beast::websocket;
        struct State {
            explicit State(beast::tcp_stream&& stream, asio::io_context& ioc)
                : socket(std::move(stream)), wake(ioc), deadline(ioc) {}
            ws::stream<beast::tcp_stream> socket;
            asio::steady_timer wake;
            asio::steady_timer deadline;  // for the write in progress
            bool closed = false;
        };
        // A client that takes no part of a write for read_timeout is closed: a peer that
        // never reads would otherwise hold the writer, and what waits for it, for ever.
        auto arm_deadline = [this](State& st) {
            st.deadline.expires_after(options.read_timeout);
            st.deadline.async_wait([&st](beast::error_code ec) {
                if (ec) return;
                beast::error_code ignored;
                beast::get_lowest_layer(st.socket).socket().close(ignored);
            });
        };
        s.stream.expires_never();
        auto state = std::make_shared<State>(std::move(s.stream), ioc);
        state->socket.set_option(ws::stream_base::timeout::suggested(beast::role_type::server));
        state->socket.set_option(ws::stream_base::decorator([](ws::response_type& r) {
            r.set(http::field::server, fmt::format("cairn/{}", kVersion));
        }));
        state->socket.read_message_max(64 * 1024);
        auto [aec] = co_await state->socket.async_accept(req, kTuple);
        if (aec) co_return;
        auto reader = [this, state, on_message = res.on_message]() -> asio::awaitable<void> {
            beast::flat_buffer in;
            for (;;) {
                auto [rec, rn] = co_await state->socket.async_read(in, kTuple);
                if (rec) break;
                std::string text = beast::buffers_to_string(in.data());
                in.consume(in.size());
                if (on_message) {
                    auto deliver = [&on_message, &text]() -> asio::awaitable<void> {
                        on_message(text);
                        co_return;
                    };
                    try {
                        co_await asio::co_spawn(pool, std::move(deliver), asio::use_awaitable);
                    } catch (const std::exception& e) {
                        spdlog::warn("websocket message handler failed: {}", e.what());
                    }
                }
            }
            state->closed = true;
            state->wake.cancel();
        };
        asio::co_spawn(ioc, std::move(reader), asio::detached);
        state->socket.text(true);
        while (!stopping && !state->closed) {
            auto produce = [&res]() -> asio::awaitable<std::optional<std::string>> {
                co_return res.next();
            };
            std::optional<std::string> next;
            try {
                next = co_await asio::co_spawn(pool, std::move(produce), asio::use_awaitable);
            } catch (const std::exception& e) {
                spdlog::warn("websocket {} ended by an error: {}", request_id, e.what());
            }
            if (!next || stopping || state->closed) break;
            if (next->empty()) {
                state->wake.expires_after(res.interval);
                co_await state->wake.async_wait(kTuple);
                continue;
            }
            arm_deadline(*state);
            auto [wec, wn] = co_await state->socket.async_write(asio::buffer(*next), kTuple);
            state->deadline.cancel();
            if (wec) break;
        }
        if (!state->closed) {
            const ws::close_reason reason(stopping ? ws::close_code::going_away
                                                   : ws::close_code::normal);
            arm_deadline(*state);
            auto [cec] = co_await state->socket.async_close(reason, kTuple);
            state->deadline.cancel();
            if (cec) co_return;  // the peer is gone: the reader has ended or will at once
            // The reader sees the close and ends; wait for it so `state` is not torn
            // down under it.
            while (!state->closed) {
                state->wake.expires_after(std::chrono::milliseconds(10));
                co_await state->wake.async_wait(kTuple);
            }
        }
    }

    // The status a request that could not be read is refused with; 0 when the client
    // just went away.
    static int refusal_status(const beast::error_code& ec) {
        if (ec == http::error::body_limit) return 413;
        if (ec == http::error::header_limit) return 431;
        if (ec.category() == http::make_error_code(http::error::bad_method).category() &&
            ec != http::error::end_of_stream && ec != http::error::partial_message)
            return 400;
        return 0;
    }

    // The handlers' view of a request read by Beast (its body moved out).
    Request to_request(http::request<http::string_body>& req, const std::string& remote) const {
        Request request{std::string(req.method_string()),
                        std::string(req.target()),
                        std::move(req.body()),
                        new_id(),
                        {}};
        request.remote = remote;
        request.websocket_upgrade = beast::websocket::is_upgrade(req);
        for (const auto& field : req) {
            std::string name(field.name_string());
            for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            request.headers[std::move(name)] = std::string(field.value());
        }
        request.client =
            client_address(remote, request.header("x-forwarded-for"), options.trusted_proxies);
        return request;
    }

    // Runs the handler on the pool and, for an answer given later, waits for it here on
    // the I/O thread, holding no pool thread.
    asio::awaitable<Response> handle(Request& request) {
        // Set on the pool if the handler asks for a Later; read here after it returns.
        struct {
            std::shared_ptr<Answer> answer;
            std::weak_ptr<LaterAnswer> later;
        } deferral;
        // Two pointers: std::function keeps them without an allocation per request.
        request.make_later = [this, &deferral]() -> std::shared_ptr<Later> {
            if (deferral.answer) throw std::logic_error("Request::later called twice");
            deferral.answer = std::make_shared<Answer>();
            auto made = std::make_shared<LaterAnswer>(deferral.answer, pool);
            deferral.later = made;
            return made;
        };
        auto run = [this, &request, &deferral]() -> asio::awaitable<Response> {
            Response r = call_handler(request);
            if (auto l = deferral.later.lock()) l->handler_returned();
            co_return r;
        };
        Response res = co_await asio::co_spawn(pool, std::move(run), asio::use_awaitable);
        request.make_later = nullptr;  // `deferral` ends here
        if (auto* d = std::get_if<Deferred>(&res.kind)) {
            // A Later of another request (or none) is answered with a 500.
            const bool mine =
                deferral.answer && d->later && d->later.get() == deferral.later.lock().get();
            d->later.reset();  // the handler's copies alone keep it
            if (mine)
                res = co_await wait(deferral.answer.get());
            else
                res = Reply{500, "application/json", json_error_body(500)};
        }
        co_return res;
    }

    // `slot` is the connection's place in its client's count, released when it ends.
    asio::awaitable<void> serve(tcp::socket socket, std::string remote, Slots::Hold slot) {
        Session s{beast::tcp_stream(std::move(socket))};
        sessions.insert(&s);
        beast::flat_buffer buffer;
        bool ok = true;
        bool upgraded = false;
        while (ok && !stopping) {
            http::request_parser<http::string_body> parser;
            parser.header_limit(static_cast<std::uint32_t>(options.header_limit));
            parser.body_limit(options.body_limit);
            s.stream.expires_after(options.read_timeout);
            auto [ec, n] = co_await http::async_read(s.stream, buffer, parser, kTuple);
            if (ec) {
                if (const int status = refusal_status(ec); status != 0) {
                    // Named, not temporaries: GCC 12 destroys temporaries inside a co_await
                    // expression twice.
                    const Reply refusal{status, "application/json", json_error_body(status)};
                    const std::string no_id;
                    const Headers none;
                    co_await write(s, refusal, none, 11, false, no_id, ok);
                }
                break;
            }

            const auto started = std::chrono::steady_clock::now();
            auto& req = parser.get();
            Request request = to_request(req, remote);
            Response res;
            if (auto pre = options.policy.preflight(request)) {
                res = std::move(*pre);
            } else if (auto wait_s = requests.take(request.client, steady_ms())) {
                Reply r = error_response(429, "rate_limited",
                                         fmt::format("more than {} requests a minute from {}",
                                                     options.requests_per_minute, request.client));
                r.headers.emplace_back("Retry-After", std::to_string(*wait_s));
                res = std::move(r);
            } else {
                s.busy = true;
                res = co_await handle(request);
                s.busy = false;
            }
            Headers policy;
            options.policy.add_headers(request, policy);

            if (auto* ws = std::get_if<WebSocket>(&res.kind)) {
                if (!request.websocket_upgrade) {
                    res = Reply{426, "application/json", json_error_body(426)};
                } else {
                    s.busy = true;  // ends on its own within one interval of stopping
                    log_access(request, 101, started);
                    co_await websocket(s, std::move(req), std::move(*ws), request.request_id);
                    upgraded = true;  // the WebSocket took the stream; nothing left to shut down
                    break;
                }
            }
            if (const auto* es = std::get_if<EventStream>(&res.kind)) {
                co_await stream(s, *es, policy, req.version(), request.request_id);
                log_access(request, es->head.status, started);
                break;
            }
            const Reply& reply = std::get<Reply>(res.kind);
            const bool keep_alive = req.keep_alive() && !stopping;
            co_await write(s, reply, policy, req.version(), keep_alive, request.request_id, ok);
            log_access(request, reply.status, started);
            if (!keep_alive) break;
        }
        if (!upgraded) {
            beast::error_code ignored;
            s.stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
        }
        sessions.erase(&s);
        --connections;
        slot = Slots::Hold();
        if (stopping && sessions.empty()) drain.cancel();
    }

    // Answers a connection over a limit with a 503 and closes it, without waiting: the
    // reply fits the socket's empty send buffer, and a peer that is gone gets nothing.
    void refuse(tcp::socket& socket, const std::string& remote, std::string_view why) {
        static const std::string kBody =
            R"({"error":{"code":"unavailable","message":"too many connections; try again shortly","details":[]}})";
        static const std::string kReply = fmt::format(
            "HTTP/1.1 503 Service Unavailable\r\nServer: cairn/{}\r\nContent-Type: "
            "application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: "
            "{}\r\n\r\n{}",
            kVersion, kBody.size(), kBody);
        beast::error_code ignored;
        socket.non_blocking(true, ignored);
        socket.write_some(asio::buffer(kReply), ignored);
        socket.shutdown(tcp::socket::shutdown_send, ignored);
        if (lingering < kMaxLingering)
            asio::co_spawn(ioc, linger(std::move(socket)), asio::detached);
        else
            socket.close(ignored);
        ++refusals_unlogged;
        const auto now = std::chrono::steady_clock::now();
        if (now - last_refusal_log >= std::chrono::seconds(10)) {
            spdlog::warn("refused {} connection(s); the last from {}: {}", refusals_unlogged,
                         remote, why);
            last_refusal_log = now;
            refusals_unlogged = 0;
        }
    }

    // Reads a refused connection until the peer closes (at most a second) before closing
    // it: closing with its request unread would send a reset, which can discard the reply.
    asio::awaitable<void> linger(tcp::socket socket) {
        ++lingering;
        asio::steady_timer limit(ioc);
        limit.expires_after(std::chrono::seconds(1));
        limit.async_wait([&socket](beast::error_code ec) {
            if (ec) return;
            beast::error_code ignored;
            socket.cancel(ignored);
        });
        std::array<char, 4096> scratch{};
        for (;;) {
            auto [ec, n] = co_await socket.async_read_some(asio::buffer(scratch), kTuple);
            if (ec) break;
        }
        limit.cancel();
        beast::error_code ignored;
        socket.close(ignored);
        --lingering;
    }

    asio::awaitable<void> accept_loop() {
        asio::steady_timer pause(ioc);
        auto last_log = std::chrono::steady_clock::time_point{};
        while (!stopping) {
            auto [ec, socket] = co_await acceptor.async_accept(kTuple);
            if (ec) {
                if (ec == asio::error::operation_aborted || !acceptor.is_open()) break;
                if (ec == asio::error::connection_aborted) continue;  // the peer gave up
                // Out of descriptors or memory: the connection stays in the backlog, so
                // retrying at once would spin. Wait for connections to end.
                const auto now = std::chrono::steady_clock::now();
                if (now - last_log >= std::chrono::seconds(10)) {
                    spdlog::warn("accept failed: {}; pausing accepts for 100 ms", ec.message());
                    last_log = now;
                }
                pause.expires_after(std::chrono::milliseconds(100));
                co_await pause.async_wait(kTuple);
                continue;
            }
            beast::error_code peer_ec;
            std::string remote = socket.remote_endpoint(peer_ec).address().to_string();
            if (connections >= options.max_connections) {
                refuse(socket, remote,
                       fmt::format("{} connections open, the limit", options.max_connections));
                continue;
            }
            Slots::Hold slot;
            if (!options.trusted_proxies.contains(remote)) {
                slot = per_client.acquire(client_address(remote, "", {}));
                if (!slot) {
                    refuse(socket, remote,
                           fmt::format("{} connections open from that client, the limit",
                                       options.max_connections_per_client));
                    continue;
                }
            }
            ++connections;
            asio::co_spawn(ioc, serve(std::move(socket), std::move(remote), std::move(slot)),
                           asio::detached);
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
