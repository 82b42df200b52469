// The HTTP server's threading: a handler blocked on the pool holds up only its own
// connection, one pool thread serves connections one after another, an answer given
// later holds no pool thread, and shutdown lets a busy request finish while it closes
// idle connections. Real sockets on 127.0.0.1; no
// database.

#include "server/http_server.hpp"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

using namespace cairn;

namespace {

// A connected socket to 127.0.0.1:port that gives up on reads after 10 s.
class Client {
  public:
    explicit Client(const std::string& address) {
        const auto port =
            static_cast<std::uint16_t>(std::stoi(address.substr(address.rfind(':') + 1)));
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        REQUIRE(fd_ >= 0);
        timeval tv{10, 0};
        ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(port);
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    }
    ~Client() { ::close(fd_); }
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    void send(const std::string& text) const {
        REQUIRE(::send(fd_, text.data(), text.size(), MSG_NOSIGNAL) ==
                static_cast<ssize_t>(text.size()));
    }
    // Everything until the server closes the connection (or the read times out).
    std::string read_to_end() const {
        std::string out;
        char buf[4096];
        for (;;) {
            const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
            if (n <= 0) break;
            out.append(buf, static_cast<std::size_t>(n));
        }
        return out;
    }

  private:
    int fd_ = -1;
};

std::string get(const std::string& path) {
    return "GET " + path + " HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
}

// A handler whose /slow route blocks until released; every other route answers at once.
struct Gate {
    std::mutex mu;
    std::condition_variable cv;
    bool entered = false;
    bool open = false;
    std::shared_ptr<server::Later> parked;  // the Later of the last /later request

    server::Response handle(const server::Request& req) {
        if (req.path() == "/slow") {
            std::unique_lock lock(mu);
            entered = true;
            cv.notify_all();
            cv.wait_for(lock, std::chrono::seconds(10), [this] { return open; });
            return server::Reply{200, "text/plain", open ? "slow done" : "never released"};
        }
        if (req.path() == "/later") {  // answered by the test, through `parked`
            auto later = req.later();
            std::lock_guard lock(mu);
            parked = later;
            entered = true;
            cv.notify_all();
            return server::Response::deferred(later);
        }
        if (req.path() == "/dropped") return server::Response::deferred(req.later());
        if (req.path() == "/twice") {  // one Later a request: the second call throws
            auto later = req.later();
            return server::Response::deferred(req.later());
        }
        if (req.path() == "/then-throws") {  // then() on the handler's thread: at once
            auto later = req.later();
            later->then([]() -> server::Reply { throw std::runtime_error("refused"); });
            return server::Response::deferred(later);
        }
        if (req.path() == "/remote") return server::Reply{200, "text/plain", "from " + req.remote};
        if (req.path() == "/none") {
            server::Reply none{204, "text/plain", ""};
            none.headers.emplace_back("X-Extra", "yes");
            return none;
        }
        return server::Reply{200, "text/plain", "fast " + std::string(req.path())};
    }
    void wait_entered() {
        std::unique_lock lock(mu);
        REQUIRE(cv.wait_for(lock, std::chrono::seconds(10), [this] { return entered; }));
    }
    bool is_open() {
        std::lock_guard lock(mu);
        return open;
    }
    std::shared_ptr<server::Later> take_parked() {
        std::lock_guard lock(mu);
        entered = false;
        return std::exchange(parked, nullptr);
    }
    void release() {
        {
            std::lock_guard lock(mu);
            open = true;
        }
        cv.notify_all();
    }
};

struct Running {
    Running(std::size_t threads, Gate& gate)
        : server(
              [threads] {
                  server::ServerOptions o;
                  o.listen = "127.0.0.1:0";
                  o.work_threads = threads;
                  return o;
              }(),
              [&gate](const server::Request& req) { return gate.handle(req); }),
          thread([this] {
              server.run();
              returned = true;
          }) {}
    ~Running() {
        server.stop();
        if (thread.joinable()) thread.join();
    }
    server::HttpServer server;
    std::atomic<bool> returned{false};  // run() has returned
    std::thread thread;                 // last: runs the members above
};

// GET `path` on a connection of its own, from another thread; the whole reply goes to
// `reply`.
std::thread fetch_in_background(const std::string& address, const std::string& path,
                                std::string& reply) {
    return std::thread([address, path, &reply] {
        Client c(address);
        c.send(get(path));
        reply = c.read_to_end();
    });
}

}  // namespace

TEST_CASE("a handler that blocks holds up only its own connection") {
    Gate gate;
    Running r(2, gate);
    const std::string address = r.server.local_address();
    std::string slow_reply;
    std::thread slow = fetch_in_background(address, "/slow", slow_reply);
    gate.wait_entered();
    for (int i = 0; i < 5; ++i) {
        Client c(address);
        c.send(get("/fast" + std::to_string(i)));
        const std::string reply = c.read_to_end();
        CHECK(reply.starts_with("HTTP/1.1 200"));
        CHECK(reply.ends_with("fast /fast" + std::to_string(i)));
    }
    CHECK_FALSE(gate.is_open());  // every fast reply came while /slow was still blocked
    gate.release();
    slow.join();
    CHECK(slow_reply.starts_with("HTTP/1.1 200"));
    CHECK(slow_reply.ends_with("slow done"));
}

TEST_CASE("an answer given later holds no pool thread, and arrives on its connection") {
    Gate gate;
    Running r(1, gate);
    const std::string address = r.server.local_address();
    Client c(address);
    c.send("GET /later HTTP/1.1\r\nHost: test\r\n\r\n");  // keep-alive
    gate.wait_entered();
    for (int i = 0; i < 3; ++i) {  // the one pool thread is free meanwhile
        Client other(address);
        other.send(get("/fast" + std::to_string(i)));
        CHECK(other.read_to_end().ends_with("fast /fast" + std::to_string(i)));
    }
    // Answered from this thread; the connection then serves its next request.
    gate.take_parked()->answer({201, "text/plain", "answered later"});
    c.send(get("/after"));
    const std::string replies = c.read_to_end();
    CHECK(replies.starts_with("HTTP/1.1 201"));
    const auto second = replies.find("HTTP/1.1 200");
    REQUIRE(second != std::string::npos);
    CHECK(replies.substr(0, second).ends_with("answered later"));
    CHECK(replies.ends_with("fast /after"));

    // then(): the function runs on the pool, not on the thread that calls then().
    std::string reply;
    std::thread t = fetch_in_background(address, "/later", reply);
    gate.wait_entered();
    std::atomic<bool> on_pool{false};
    const auto caller = std::this_thread::get_id();
    gate.take_parked()->then([&on_pool, caller] {
        on_pool = std::this_thread::get_id() != caller;
        return server::Reply{200, "text/plain", "from then"};
    });
    t.join();
    CHECK(reply.ends_with("from then"));
    CHECK(on_pool.load());
}

TEST_CASE("a Later dropped unanswered, whose then() throws, or asked for twice answers 500") {
    Gate gate;
    Running r(1, gate);
    for (const std::string path : {"/dropped", "/then-throws", "/twice"}) {
        CAPTURE(path);
        Client c(r.server.local_address());
        c.send(get(path));
        const std::string reply = c.read_to_end();
        CHECK(reply.starts_with("HTTP/1.1 500"));
        CHECK(reply.find(R"("code":"internal")") != std::string::npos);
    }
    // Answering twice: the first answer stands.
    std::string reply;
    std::thread t = fetch_in_background(r.server.local_address(), "/later", reply);
    gate.wait_entered();
    auto later = gate.take_parked();
    later->answer({200, "text/plain", "first"});
    later->answer({500, "text/plain", "second"});
    t.join();
    CHECK(reply.starts_with("HTTP/1.1 200"));
    CHECK(reply.ends_with("first"));
}

TEST_CASE("stop waits for an answer given later") {
    Gate gate;
    Running r(1, gate);
    std::string reply;
    std::thread t = fetch_in_background(r.server.local_address(), "/later", reply);
    gate.wait_entered();
    r.server.stop();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    CHECK_FALSE(r.returned.load());
    gate.take_parked()->answer({200, "text/plain", "done at last"});
    t.join();
    CHECK(reply.ends_with("done at last"));
    r.thread.join();
    CHECK(r.returned.load());
}

TEST_CASE("one thread serves one connection after another") {
    Gate gate;
    Running r(1, gate);
    for (int i = 0; i < 3; ++i) {
        Client c(r.server.local_address());
        c.send(get("/n" + std::to_string(i)));
        CHECK(c.read_to_end().ends_with("fast /n" + std::to_string(i)));
    }
}

TEST_CASE("stop lets a busy request finish and closes idle connections") {
    Gate gate;
    Running r(2, gate);
    const std::string address = r.server.local_address();
    Client idle(address);  // connected, no request yet: idle keep-alive
    std::string slow_reply;
    std::thread slow = fetch_in_background(address, "/slow", slow_reply);
    gate.wait_entered();
    r.server.stop();
    // The idle connection is closed without an answer, while /slow is still running.
    CHECK(idle.read_to_end().empty());
    CHECK_FALSE(r.returned.load());
    gate.release();
    slow.join();
    CHECK(slow_reply.starts_with("HTTP/1.1 200"));
    CHECK(slow_reply.find("Connection: close") != std::string::npos);
    CHECK(slow_reply.ends_with("slow done"));
    r.thread.join();  // run() returns once the last connection has ended
    CHECK(r.returned.load());
}

TEST_CASE("every request on a connection carries the peer's address") {
    Gate gate;
    Running r(1, gate);
    Client c(r.server.local_address());
    c.send("GET /remote HTTP/1.1\r\nHost: test\r\n\r\n" + get("/remote"));
    const std::string replies = c.read_to_end();
    const auto first = replies.find("from 127.0.0.1");
    REQUIRE(first != std::string::npos);
    CHECK(replies.find("from 127.0.0.1", first + 1) != std::string::npos);  // the second too
}

TEST_CASE("responses on the wire: status line, headers, length, keep-alive and its end") {
    Gate gate;
    Running r(1, gate);
    {
        // Two requests on one HTTP/1.1 connection: the first is kept alive, its length
        // tells where the second begins; the second asks to close and is told so.
        Client c(r.server.local_address());
        c.send("GET /one HTTP/1.1\r\nHost: test\r\n\r\n" + get("/two"));
        const std::string replies = c.read_to_end();
        REQUIRE(replies.starts_with("HTTP/1.1 200 OK\r\n"));
        const auto head_end = replies.find("\r\n\r\n");
        REQUIRE(head_end != std::string::npos);
        const std::string head = replies.substr(0, head_end + 2);
        CHECK(head.find("Content-Length: 9\r\n") != std::string::npos);  // "fast /one"
        CHECK(head.find("Content-Type: text/plain\r\n") != std::string::npos);
        CHECK(head.find("Server: cairn/") != std::string::npos);
        CHECK(head.find("Connection: close") == std::string::npos);
        const std::string second = replies.substr(head_end + 4 + 9);
        CHECK(replies.substr(head_end + 4, 9) == "fast /one");
        CHECK(second.starts_with("HTTP/1.1 200 OK\r\n"));
        CHECK(second.find("Connection: close\r\n") != std::string::npos);
        CHECK(second.ends_with("\r\n\r\nfast /two"));
    }
    {
        // HTTP/1.0 is answered in kind, and closed when it does not ask to keep alive.
        Client c(r.server.local_address());
        c.send("GET /old HTTP/1.0\r\n\r\n");
        const std::string reply = c.read_to_end();
        CHECK(reply.starts_with("HTTP/1.0 200 OK\r\n"));
        CHECK(reply.ends_with("\r\n\r\nfast /old"));
    }
    {
        // No content: no length, no body; a handler's own header goes out as given.
        Client c(r.server.local_address());
        c.send(get("/none"));
        const std::string reply = c.read_to_end();
        CHECK(reply.starts_with("HTTP/1.1 204 No Content\r\n"));
        CHECK(reply.find("X-Extra: yes\r\n") != std::string::npos);
        CHECK(reply.find("Content-Length") == std::string::npos);
        CHECK(reply.ends_with("\r\n\r\n"));
    }
}
