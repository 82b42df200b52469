// The ticket plugin's services and workflows on SQLite and Postgres (CAIRN_TEST_BACKEND),
// and the remote analysers against local HTTP servers that speak the Gemini and OpenAI
// wire formats — including slow answers, 429s, 500s and garbage.

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "engine/engine.hpp"
#include "plugins/ticket/ticket_plugin.hpp"
#include "server/http_server.hpp"
#include "storage/database.hpp"
#include "storage/migrations.hpp"
#include "storage/run_store.hpp"
#include "support/test_db.hpp"
#include "workflows/ticket_workflows.hpp"

using namespace cairn;
using namespace cairn::ticket;
using engine::ManualClock;
using namespace std::chrono_literals;

namespace {

constexpr std::int64_t kT0 = 1'795'000'000'000;

// A local model server: answers each request with the next scripted reply (the last one
// repeats) and records what it was sent.
class FakeModel {
  public:
    struct Reply {
        int status = 200;
        std::string body;
        std::chrono::milliseconds delay{0};
        std::vector<std::pair<std::string, std::string>> headers;
    };

    FakeModel() {
        server::ServerOptions o;
        o.listen = "127.0.0.1:0";
        o.work_threads = 2;
        server_ = std::make_unique<server::HttpServer>(o, [this](const server::Request& req) {
            Reply r;
            {
                std::lock_guard lock(mutex_);
                requests_.push_back(req);
                r = script_.size() > 1 ? script_.front()
                    : script_.empty()  ? Reply{500, "{}"}
                                       : script_.front();
                if (script_.size() > 1) script_.pop_front();
            }
            std::this_thread::sleep_for(r.delay);
            server::Reply res;
            res.status = r.status;
            res.body = r.body;
            res.headers = r.headers;
            return server::Response(std::move(res));
        });
        thread_ = std::thread([this] { server_->run(); });
    }
    ~FakeModel() {
        server_->stop();
        thread_.join();
    }
    std::string url() const { return "http://" + server_->local_address(); }
    void script(std::vector<Reply> replies) {
        std::lock_guard lock(mutex_);
        script_.assign(replies.begin(), replies.end());
    }
    std::vector<server::Request> requests() {
        std::lock_guard lock(mutex_);
        return requests_;
    }

  private:
    std::unique_ptr<server::HttpServer> server_;
    std::thread thread_;
    std::mutex mutex_;
    std::deque<Reply> script_;
    std::vector<server::Request> requests_;
};

const json kAnswer = {{"priority", "high"},
                      {"helpful_notes", "Look at the lock order in the orders service."},
                      {"related_skills", {"Postgres", "kubernetes"}},
                      {"summary", "Deadlocks in checkout"}};

std::string openai_body(const std::string& content) {
    return json{{"id", "chatcmpl-1"},
                {"object", "chat.completion"},
                {"choices",
                 {{{"index", 0},
                   {"message", {{"role", "assistant"}, {"content", content}}},
                   {"finish_reason", "stop"}}}}}
        .dump();
}
std::string gemini_body(const std::string& text) {
    return json{{"candidates",
                 {{{"content", {{"role", "model"}, {"parts", {{{"text", text}}}}}},
                   {"finishReason", "STOP"}}}}}
        .dump();
}

TicketText sample() {
    return {
        "Checkout deadlocks", "Postgres reports deadlocks on orders", {"bug"}, std::nullopt, kT0};
}

AnalyzerConfig remote(const std::string& kind, const std::string& url) {
    AnalyzerConfig c;
    c.kind = kind;
    c.url = url;
    c.key = "test-key";
    c.model = "test-model";
    c.timeout = std::chrono::milliseconds(1500);
    return c;
}

// A migrated database with the ticket plugin started on a manual clock.
struct Fixture {
    AnalyzerConfig ai;
    testing::TestDb tdb;
    ManualClock clock{kT0};
    engine::Engine engine{tdb.db(), clock};
    TicketPlugin plugin{workflows::register_ticket_workflows, config(ai)};

    explicit Fixture(AnalyzerConfig analyser = {}) : ai(std::move(analyser)) {
        storage::Migrator(tdb.db(), {storage::run_store_component(), ticket_component()}).apply();
        plugin.start({tdb.db(), engine});
        plugin.register_workflows(engine);
    }
    static TicketConfig config(const AnalyzerConfig& ai) {
        TicketConfig c;
        c.jwt_secret = "a test secret of at least thirty-two characters";
        c.ai = ai;
        return c;
    }
    Services& s() { return plugin.services(); }
    User user(const std::string& email, Role role, std::vector<std::string> skills = {}) {
        static const std::string hash = hash_password("password-123");
        return tdb.db().transact([&](storage::Transaction& tx) {
            return AuthService::create_user(tx, engine, email, email.substr(0, email.find('@')),
                                            hash, role, skills, clock.now_ms());
        });
    }
    // `u` signed in: a principal with a live session, as a request carries.
    Principal as(const User& u) {
        const Session s =
            this->s().auth.login({{"email", u.email}, {"password", "password-123"}}, "ip");
        return this->s().auth.authenticate("Bearer " + s.access_token);
    }
    // Runs everything due, moving the clock past retry backoffs, until nothing is left.
    void drain() {
        for (int i = 0; i < 50; ++i) {
            engine.run_until_idle();
            clock.advance(120'000);
        }
        engine.run_until_idle();
    }
    json run_of(const std::string& run_id) {
        auto run = engine.store().get_run(run_id);
        REQUIRE(run);
        return json{{"status", run->status}, {"output", json::parse(run->output.value_or("null"))}};
    }
};

std::vector<std::string> step_keys(engine::Engine& e, const std::string& run_id) {
    std::vector<std::string> keys;
    for (const auto& s : e.store().steps(run_id)) keys.push_back(s.key + ":" + s.status);
    return keys;
}

}  // namespace

TEST_CASE("openai analyser: speaks chat completions and asks for JSON") {
    FakeModel fake;
    fake.script({{200, openai_body(kAnswer.dump())}});
    const auto a = make_analyzer(remote("openai", fake.url()))->analyse(sample());
    CHECK(a.priority == "high");
    CHECK(a.related_skills == std::vector<std::string>{"postgresql", "kubernetes"});
    const auto reqs = fake.requests();
    REQUIRE(reqs.size() == 1);
    CHECK(reqs[0].target == "/v1/chat/completions");
    CHECK(reqs[0].header("authorization") == "Bearer test-key");
    const json body = json::parse(reqs[0].body);
    CHECK(body["model"] == "test-model");
    CHECK(body["response_format"]["type"] == "json_object");
    CHECK(body["messages"][1]["content"].get<std::string>().find("Checkout deadlocks") !=
          std::string::npos);
}

TEST_CASE("openai analyser: fenced JSON is accepted; garbage and partial answers are step errors") {
    FakeModel fake;
    auto analyser = make_analyzer(remote("openai", fake.url() + "/v1"));
    fake.script({{200, openai_body("```json\n" + kAnswer.dump() + "\n```")}});
    CHECK(analyser->analyse(sample()).summary == "Deadlocks in checkout");
    fake.script({{200, openai_body("I think this is high priority!")}});
    CHECK_THROWS_WITH_AS(analyser->analyse(sample()), doctest::Contains("not JSON"),
                         std::runtime_error);
    fake.script({{200, openai_body(R"({"priority":"high"})")}});
    CHECK_THROWS_WITH_AS(analyser->analyse(sample()), doctest::Contains("helpful_notes"),
                         std::runtime_error);
    fake.script({{200, "<html>oops</html>"}});
    CHECK_THROWS_AS(analyser->analyse(sample()), std::runtime_error);
    fake.script({{200, R"({"choices":[]})"}});
    CHECK_THROWS_AS(analyser->analyse(sample()), std::runtime_error);
}

TEST_CASE("remote analysers classify HTTP failures for the retry policy") {
    FakeModel fake;
    for (const std::string kind : {"openai", "gemini"}) {
        CAPTURE(kind);
        auto analyser = make_analyzer(remote(kind, fake.url()));
        fake.script({{429, R"({"error":{"message":"slow down"}})", {}, {{"Retry-After", "7"}}}});
        try {
            analyser->analyse(sample());
            FAIL("a 429 must throw");
        } catch (const RetryAfterError& e) {
            CHECK(e.delay() == std::chrono::seconds(7));
            CHECK(std::string(e.what()).find("slow down") != std::string::npos);
        }
        // A provider's wait is clamped: a huge one must not park the run for days.
        for (const auto& [header, expected] :
             {std::pair{"99999999999", 300}, {"-40", 1}, {"0", 1}, {"soon", 5}}) {
            CAPTURE(header);
            fake.script(
                {{429, R"({"error":{"message":"slow down"}})", {}, {{"Retry-After", header}}}});
            try {
                analyser->analyse(sample());
                FAIL("a 429 must throw");
            } catch (const RetryAfterError& e) {
                CHECK(e.delay() == std::chrono::seconds(expected));
            }
        }
        fake.script({{500, R"({"error":{"message":"overloaded"}})"}});
        try {
            analyser->analyse(sample());
            FAIL("a 500 must throw");
        } catch (const NonRetriableError&) {
            FAIL("a 500 is worth retrying");
        } catch (const std::runtime_error& e) {
            CHECK(std::string(e.what()).find("HTTP 500") != std::string::npos);
        }
        fake.script({{401, R"({"error":{"message":"bad key"}})"}});
        CHECK_THROWS_AS(analyser->analyse(sample()), NonRetriableError);
        fake.script({{200, "{}", std::chrono::milliseconds(2500)}});
        CHECK_THROWS_WITH_AS(analyser->analyse(sample()), doctest::Contains("imeout"),
                             std::runtime_error);
    }
}

TEST_CASE("gemini analyser: generateContent with a response schema") {
    FakeModel fake;
    fake.script({{200, gemini_body(kAnswer.dump())}});
    const auto a = make_analyzer(remote("gemini", fake.url()))->analyse(sample());
    CHECK(a.priority == "high");
    const auto reqs = fake.requests();
    REQUIRE(reqs.size() == 1);
    CHECK(reqs[0].target == "/v1beta/models/test-model:generateContent");
    CHECK(reqs[0].header("x-goog-api-key") == "test-key");
    const json body = json::parse(reqs[0].body);
    CHECK(body["generationConfig"]["responseMimeType"] == "application/json");
    CHECK(body["generationConfig"]["responseSchema"]["required"].size() == 4);
    fake.script({{200, R"({"promptFeedback":{"blockReason":"SAFETY"}})"}});
    CHECK_THROWS_WITH_AS(make_analyzer(remote("gemini", fake.url()))->analyse(sample()),
                         doctest::Contains("blocked"), std::runtime_error);
}

// A plain SMTP server on loopback that offers no STARTTLS and counts the messages it took.
class PlainSmtp {
  public:
    PlainSmtp() {
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof a;
        REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        REQUIRE(::listen(fd_, 4) == 0);
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
        port_ = ntohs(a.sin_port);
        thread_ = std::thread([this] { serve(); });
    }
    ~PlainSmtp() {
        ::shutdown(fd_, SHUT_RDWR);  // ends the blocked accept()
        thread_.join();
        ::close(fd_);
    }
    std::string url(const std::string& options = "") const {
        return fmt::format("smtp://127.0.0.1:{}{}", port_, options);
    }
    int delivered() const { return delivered_.load(); }

  private:
    void serve() {
        for (;;) {
            const int c = ::accept(fd_, nullptr, nullptr);
            if (c < 0) return;
            converse(c);
            ::close(c);
        }
    }
    static void say(int c, std::string_view text) { (void)!::write(c, text.data(), text.size()); }
    void converse(int c) {
        say(c, "220 plain ESMTP\r\n");
        std::string pending;
        bool in_data = false;
        char buf[4096];
        for (;;) {
            const ssize_t n = ::read(c, buf, sizeof buf);
            if (n <= 0) return;
            pending.append(buf, static_cast<std::size_t>(n));
            for (auto eol = pending.find("\r\n"); eol != std::string::npos;
                 eol = pending.find("\r\n")) {
                const std::string line = pending.substr(0, eol);
                pending.erase(0, eol + 2);
                if (in_data) {
                    if (line == ".") {
                        in_data = false;
                        ++delivered_;
                        say(c, "250 queued\r\n");
                    }
                } else if (line.starts_with("EHLO")) {
                    say(c, "250-plain\r\n250 8BITMIME\r\n");  // no STARTTLS on offer
                } else if (line.starts_with("DATA")) {
                    in_data = true;
                    say(c, "354 go on\r\n");
                } else if (line.starts_with("QUIT")) {
                    say(c, "221 bye\r\n");
                    return;
                } else {
                    say(c, "250 ok\r\n");
                }
            }
        }
    }
    int fd_ = -1;
    int port_ = 0;
    std::atomic<int> delivered_{0};
    std::thread thread_;
};

TEST_CASE("SMTP insists on TLS unless told otherwise") {
    Fixture f;
    PlainSmtp smtp;
    const Mail mail{"ann@example.test", "Hello", "Body", "mail-key-1"};
    // Default: STARTTLS is required; a server without it gets no message (and no password).
    auto strict = make_mailer(smtp.url(), "cairn@example.test", f.tdb.db());
    CHECK_THROWS_AS(strict->send(mail), std::runtime_error);
    CHECK(smtp.delivered() == 0);
    // Plain text only when asked for: ?tls=try (opportunistic) or ?tls=none.
    auto lax = make_mailer(smtp.url("?tls=try"), "cairn@example.test", f.tdb.db());
    CHECK(lax->send(mail));
    CHECK(smtp.delivered() == 1);
}

TEST_CASE("unknown analyser and mailer settings are refused") {
    AnalyzerConfig c;
    c.kind = "magic";
    CHECK_THROWS_AS(make_analyzer(c), std::invalid_argument);
    auto db = storage::Database::open("sqlite::memory:");
    CHECK_THROWS_AS(make_mailer("carrier-pigeon", "x@y.z", *db), std::invalid_argument);
    CHECK_THROWS_AS(make_mailer("smtp://host:25?tls=maybe", "x@y.z", *db), std::invalid_argument);
    CHECK(redact_mail_spec("smtp://user:hunter2@mail:587") == "smtp://user:***@mail:587");
}

TEST_CASE("ticket-created: a 500 then a good answer; analysed, assigned by skills, mailed") {
    FakeModel fake;
    Fixture f(remote("openai", fake.url()));
    fake.script({{500, R"({"error":"busy"})"}, {200, openai_body(kAnswer.dump())}});
    const User owner = f.user("owner@example.test", Role::user);
    const User web = f.user("web@example.test", Role::moderator, {"react"});
    const User ops = f.user("ops@example.test", Role::moderator, {"kubernetes", "postgresql"});
    f.user("boss@example.test", Role::admin);
    const Ticket t = f.s().tickets.create(
        f.as(owner),
        {{"title", "Checkout deadlocks"}, {"description", "orders table"}, {"tags", {"bug"}}});
    REQUIRE(t.run_id);
    f.drain();
    CHECK(f.run_of(*t.run_id)["status"] == "completed");
    const auto saved = f.s().tickets.load(t.id);
    REQUIRE(saved);
    CHECK(saved->status == "in_progress");
    CHECK(saved->priority == "high");
    CHECK(saved->summary == "Deadlocks in checkout");
    CHECK(saved->assigned_to == ops.id);
    CHECK(fake.requests().size() == 2);
    const auto mails = list_outbox(f.tdb.db(), ops.email, 10);
    CHECK(std::count_if(mails.begin(), mails.end(), [](const OutboxEntry& m) {
              return m.subject.find("Checkout deadlocks") != std::string::npos;
          }) == 1);
    CHECK(list_outbox(f.tdb.db(), web.email, 10).size() == 1);  // only the welcome
    // Replaying the whole run does not mail again for the same run... a replay is a new run,
    // and re-running the mail step of this run is a no-op:
    CHECK_FALSE(f.s().mailer->send({ops.email, "again", "again", *t.run_id + ":assignee"}));
}

TEST_CASE("ticket-created: a model that keeps answering garbage falls back to the heuristic") {
    FakeModel fake;
    Fixture f(remote("openai", fake.url()));
    fake.script({{200, openai_body("not json at all")}});
    const User owner = f.user("owner@example.test", Role::user);
    const User admin = f.user("admin@example.test", Role::admin);
    const Ticket t = f.s().tickets.create(
        f.as(owner),
        {{"title", "Security breach"}, {"description", "an exploit in login"}, {"tags", {"sec"}}});
    f.drain();
    CHECK(f.run_of(*t.run_id)["status"] == "completed");
    const auto keys = step_keys(f.engine, *t.run_id);
    CHECK(std::find(keys.begin(), keys.end(), "analyse:failed") != keys.end());
    CHECK(std::find(keys.begin(), keys.end(), "analyse-fallback:completed") != keys.end());
    const auto saved = f.s().tickets.load(t.id);
    CHECK(saved->priority == "high");
    CHECK(saved->assigned_to == admin.id);  // no moderator at all: an admin gets it
    CHECK(fake.requests().size() == 6);     // every attempt the policy allows, then no more
}

TEST_CASE("ticket-created: a ticket deleted before its run ends the run cleanly") {
    Fixture f;
    const User owner = f.user("owner@example.test", Role::user);
    const User admin = f.user("admin@example.test", Role::admin);
    const Ticket t = f.s().tickets.create(
        f.as(owner), {{"title", "Short-lived"}, {"description", "d"}, {"tags", {"x"}}});
    f.s().tickets.remove(f.as(admin), t.id);
    f.drain();
    const auto run = f.run_of(*t.run_id);
    CHECK(run["status"] == "completed");
    CHECK(run["output"]["outcome"] == "ticket deleted");
}

TEST_CASE("assignment: best skill match, then fewest open tickets, then an admin") {
    Fixture f;
    const User owner = f.user("owner@example.test", Role::user);
    const User a = f.user("a@example.test", Role::moderator, {"react", "css"});
    const User b = f.user("b@example.test", Role::moderator, {"ReactJS", "CSS"});
    const User admin = f.user("admin@example.test", Role::admin);
    auto create = [&] {
        return f.s().tickets.create(f.as(owner),
                                    {{"title", "t"}, {"description", "d"}, {"tags", {"x"}}});
    };
    const Ticket t1 = create();
    CHECK(f.s().tickets.pick_assignee(t1.id, {"react", "css"})->id ==
          a.id);  // tie: longest-standing
    f.s().db.transact(
        [&](storage::Transaction& tx) { f.s().tickets.assign_if_unassigned(tx, t1.id, a.id); });
    const Ticket t2 = create();
    CHECK(f.s().tickets.pick_assignee(t2.id, {"react"})->id ==
          b.id);  // tie on skills: b has fewer open
    CHECK(f.s().tickets.pick_assignee(t2.id, {"cobol"})->id ==
          admin.id);                                                   // nobody matches: an admin
    CHECK(f.s().tickets.pick_assignee(t1.id, {"cobol"})->id == a.id);  // already assigned: stays
    f.s().users.set_active(b.id, false);
    CHECK(f.s().tickets.pick_assignee(t2.id, {"react"})->id == a.id);  // inactive staff are skipped
}

TEST_CASE("register emits user/signup in the same transaction; the welcome mail goes out once") {
    Fixture f;
    const Session s = f.s().auth.register_user(
        {{"email", "New@Example.test"}, {"password", "password-123"}, {"skills", {"Postgres"}}},
        "10.0.0.1");
    CHECK(s.user.email == "new@example.test");
    CHECK(s.user.skills == std::vector<std::string>{"postgresql"});
    const auto events =
        f.engine.store().list_events(std::string("user/signup"), std::nullopt, 10).events;
    REQUIRE(events.size() == 1);
    f.drain();
    f.drain();
    CHECK(list_outbox(f.tdb.db(), std::string("new@example.test"), 10).size() == 1);
    // A failed insert (taken email) writes no event either.
    CHECK_THROWS_AS(f.s().auth.register_user(
                        {{"email", "new@example.test"}, {"password", "password-123"}}, "10.0.0.1"),
                    ApiError);
    CHECK(
        f.engine.store().list_events(std::string("user/signup"), std::nullopt, 10).events.size() ==
        1);
}

TEST_CASE(
    "authenticate: a token seen before is accepted again, a changed one never, a revoked one not") {
    Fixture f;
    const Session s =
        f.s().auth.register_user({{"email", "u@example.test"}, {"password", "password-123"}}, "ip");
    const Principal first = f.s().auth.authenticate("Bearer " + s.access_token);
    const Principal again = f.s().auth.authenticate("Bearer " + s.access_token);
    CHECK(again.user_id == first.user_id);
    CHECK(again.session_id == first.session_id);
    CHECK(again.email == "u@example.test");
    // Each byte of the token counts after it was accepted: the signature, the claims.
    std::string forged = s.access_token;
    char& c = forged[forged.rfind('.') + 5];  // six bits of the signature, all of them data
    c = c == 'A' ? 'Q' : 'A';
    CHECK_THROWS_AS(f.s().auth.authenticate(forged), ApiError);
    forged = s.access_token;
    forged[forged.find('.') + 3] ^= 1;
    CHECK_THROWS_AS(f.s().auth.authenticate(forged), ApiError);
    // The session is still checked on every request: logout ends the token at once.
    f.s().auth.logout(again);
    CHECK_THROWS_AS(f.s().auth.authenticate(s.access_token), ApiError);
}

TEST_CASE("a ticket is written only while its author's session is live, checked in the write") {
    Fixture f;
    auto& auth = f.s().auth;
    const Session s =
        auth.register_user({{"email", "u@example.test"}, {"password", "password-123"}}, "ip");
    const Session other =
        auth.register_user({{"email", "o@example.test"}, {"password", "password-123"}}, "ip");
    // The token's part needs no database; the rest rides in the ticket's write.
    const auto token = auth.verify_token("Bearer " + s.access_token);
    CHECK(token.user_id == s.user.id);
    CHECK_THROWS_AS(auth.verify_token("Bearer not-a-token"), ApiError);
    const auto as = [](const VerifiedTokens::Claims& c) {
        Principal who;
        who.user_id = c.user_id;
        who.session_id = c.session_id;
        return who;
    };
    const json body = {{"title", "t"}, {"description", "d"}, {"tags", {"x"}}};
    const Ticket t = f.s().tickets.create(as(token), body);
    CHECK(f.s().tickets.load(t.id));
    const auto tickets = [&] {
        return f.tdb.db().exec("SELECT count(*) FROM tickets").front().get<std::int64_t>(0);
    };
    const auto created = [&] {
        return f.engine.store()
            .list_events(std::string("ticket/created"), std::nullopt, 10)
            .events.size();
    };
    // Logged out: refused in the write, and nothing of it is written.
    auth.logout(auth.authenticate(s.access_token));
    const auto refused = [&](const Principal& who) {
        try {
            f.s().tickets.create(who, body);
        } catch (const ApiError& e) {
            return e.code() == ErrorCode::unauthorized;
        }
        return false;
    };
    CHECK(refused(as(token)));
    // Deactivated: the same, though the session itself was not revoked.
    const auto other_token = auth.verify_token(other.access_token);
    f.tdb.db().exec("UPDATE users SET active = 0 WHERE id = $1", other.user.id);
    CHECK(refused(as(other_token)));
    // Another user's session for this user: refused too.
    Principal mixed = as(other_token);
    mixed.user_id = s.user.id;
    f.tdb.db().exec("UPDATE users SET active = 1 WHERE id = $1", other.user.id);
    CHECK(refused(mixed));
    CHECK(tickets() == 1);
    CHECK(created() == 1);
    f.s().tickets.create(as(other_token), body);
    CHECK(tickets() == 2);
    CHECK(created() == 2);
}

TEST_CASE("ticket posts made at once share batches, and each gets its own outcome once") {
    Fixture f;
    auto& auth = f.s().auth;
    constexpr int kUsers = 8, kEach = 30;
    std::vector<Principal> users;
    for (int u = 0; u < kUsers; ++u) {
        const Session s = auth.register_user(
            {{"email", fmt::format("u{}@example.test", u)}, {"password", "password-123"}}, "ip");
        const auto token = auth.verify_token(s.access_token);
        Principal who;
        who.user_id = token.user_id;
        who.session_id = token.session_id;
        users.push_back(who);
    }
    // Every third user's session ends before the posts: theirs are refused, the rest land.
    for (int u = 0; u < kUsers; u += 3) {
        f.tdb.db().exec("UPDATE auth_sessions SET revoked_at = 1 WHERE id = $1",
                        users[static_cast<std::size_t>(u)].session_id);
    }
    std::mutex mu;
    std::condition_variable cv;
    std::map<std::string, int> outcomes;  // ticket title -> times done; guarded by mu
    std::atomic<int> landed{0}, refused{0}, wrong{0};
    std::vector<std::thread> threads;
    for (int u = 0; u < kUsers; ++u) {
        threads.emplace_back([&, u] {
            const Principal& who = users[static_cast<std::size_t>(u)];
            const bool live = u % 3 != 0;
            for (int i = 0; i < kEach; ++i) {
                const std::string title = fmt::format("t-{}-{}", u, i);
                const json body = {{"title", title}, {"description", "d"}, {"tags", {"x"}}};
                f.s().tickets.create(who, body, [&, title, live](TicketService::Created c) {
                    if (c.ticket) {
                        ++landed;
                        if (!live || c.ticket->title != title || !c.ticket->run_id) ++wrong;
                    } else {
                        try {
                            std::rethrow_exception(c.error);
                        } catch (const ApiError& e) {
                            if (e.code() != ErrorCode::unauthorized || live) ++wrong;
                            ++refused;
                        } catch (...) {
                            ++wrong;
                        }
                    }
                    std::lock_guard lock(mu);
                    ++outcomes[title];
                    cv.notify_all();
                });
            }
        });
    }
    for (auto& th : threads) th.join();
    {
        std::unique_lock lock(mu);
        CHECK(cv.wait_for(lock, 60s, [&] { return outcomes.size() == kUsers * kEach; }));
        for (const auto& [title, n] : outcomes) CHECK(n == 1);
    }
    const int dead = (kUsers + 2) / 3;
    CHECK(wrong == 0);
    CHECK(refused == dead * kEach);
    CHECK(landed == (kUsers - dead) * kEach);
    const auto count = [&](const std::string& sql) {
        return f.tdb.db().exec(sql).front().get<std::int64_t>(0);
    };
    // Each ticket with its own event's run, its change row, and nothing of a refused post.
    CHECK(count("SELECT count(*) FROM tickets") == landed);
    CHECK(count("SELECT count(*) FROM ticket_changes WHERE kind = 'created'") == landed);
    CHECK(count("SELECT count(*) FROM events WHERE name = 'ticket/created'") == landed);
    CHECK(count("SELECT count(*) FROM tickets t JOIN runs r ON r.id = t.run_id "
                "JOIN events e ON e.id = r.event_id "
                "WHERE e.data LIKE '%' || t.id || '%'") == landed);
    const auto stats = f.tdb.db().writes().stats();
    CHECK(stats.shared_writes > stats.shared_batches);  // some posts shared a batch
}

TEST_CASE("sessions: refresh rotates, reuse revokes the family, deactivation cuts access") {
    Fixture f;
    const Session s =
        f.s().auth.register_user({{"email", "u@example.test"}, {"password", "password-123"}}, "ip");
    const Principal p = f.s().auth.authenticate("Bearer " + s.access_token);
    CHECK(p.user_id == s.user.id);
    const Session r1 = f.s().auth.refresh({{"refresh_token", s.refresh_token}});
    CHECK(r1.refresh_token != s.refresh_token);
    CHECK_THROWS_AS(f.s().auth.refresh({{"refresh_token", s.refresh_token}}), ApiError);  // reuse
    CHECK_THROWS_AS(f.s().auth.refresh({{"refresh_token", r1.refresh_token}}),
                    ApiError);  // family gone
    CHECK_THROWS_AS(f.s().auth.authenticate(r1.access_token), ApiError);
    // Access tokens expire with the clock.
    const Session s2 =
        f.s().auth.login({{"email", "u@example.test"}, {"password", "password-123"}}, "ip");
    CHECK_NOTHROW(f.s().auth.authenticate(s2.access_token));
    f.clock.advance(16 * 60 * 1000);
    CHECK_THROWS_AS(f.s().auth.authenticate(s2.access_token), ApiError);
}

TEST_CASE("two admins demoting each other at once leave one admin") {
    Fixture f;
    std::string kept = f.user("admin0@example.test", Role::admin).id;
    int both_demoted = 0;
    for (int round = 1; round <= 30; ++round) {
        // Exactly two active admins: the one left from the last round and a new one.
        const std::string added =
            f.user(fmt::format("admin{}@example.test", round), Role::admin).id;
        std::atomic<int> ready{0};
        std::atomic<int> demoted{0};
        auto demote = [&](const std::string& id) {
            ++ready;
            while (ready.load() < 2) std::this_thread::yield();
            try {
                f.s().users.update(id, {{"role", "user"}});
                ++demoted;
            } catch (const ApiError& e) {
                CHECK(e.code() == ErrorCode::conflict);
            }
        };
        std::thread a(demote, kept);
        std::thread b(demote, added);
        a.join();
        b.join();
        if (demoted.load() == 2) ++both_demoted;
        const auto admins =
            f.tdb.db().read("SELECT id FROM users WHERE role = 'admin' AND active = 1");
        REQUIRE(admins.size() == 1);
        kept = admins.front().get<std::string>(0);
    }
    CHECK(both_demoted == 0);
}

TEST_CASE("a session ends 30 days after its login, however often it is refreshed") {
    Fixture f;
    Session s =
        f.s().auth.register_user({{"email", "u@example.test"}, {"password", "password-123"}}, "ip");
    constexpr std::int64_t kDay = 86'400'000;
    for (int day : {10, 10, 9}) {  // refreshed on days 10, 20 and 29: each token is new
        f.clock.advance(day * kDay);
        s = f.s().auth.refresh({{"refresh_token", s.refresh_token}});
    }
    f.clock.advance(kDay + 1);  // day 30: the last token has 29 days left, the session none
    try {
        f.s().auth.refresh({{"refresh_token", s.refresh_token}});
        FAIL("a refresh past the session's end was accepted");
    } catch (const ApiError& e) {
        CHECK(e.code() == ErrorCode::unauthorized);
        CHECK(std::string(e.what()) == "the session has expired; log in again");
    }
}

TEST_CASE("login failures count per account and client: guessing elsewhere locks nobody out") {
    Fixture f;  // CAIRN_AUTH_RATE_ACCOUNT's default: 10 failures a minute
    const User admin = f.user("admin@example.test", Role::admin);
    auto login = [&](const std::string& password, const std::string& client) {
        return f.s().auth.login({{"email", admin.email}, {"password", password}}, client);
    };
    for (int i = 0; i < 10; ++i) {
        CHECK_THROWS_WITH_AS(login("a-wrong-guess", "198.51.100.7"), "invalid email or password",
                             ApiError);
    }
    // The guessing client is held back, even with the right password...
    try {
        login("password-123", "198.51.100.7");
        FAIL("the guessing client was not held back");
    } catch (const ApiError& e) {
        CHECK(e.code() == ErrorCode::rate_limited);
        CHECK(e.retry_after_s() >= 1);
    }
    // ...while the admin, from anywhere else, logs in.
    CHECK(login("password-123", "203.0.113.9").user.id == admin.id);
    // A success clears the client's failures.
    for (int i = 0; i < 9; ++i) CHECK_THROWS_AS(login("wrong", "203.0.113.9"), ApiError);
    CHECK_NOTHROW(login("password-123", "203.0.113.9"));
    for (int i = 0; i < 9; ++i) CHECK_THROWS_AS(login("wrong", "203.0.113.9"), ApiError);
    CHECK_NOTHROW(login("password-123", "203.0.113.9"));
}
