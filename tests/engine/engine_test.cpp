// Engine semantics on SQLite and Postgres (CAIRN_TEST_BACKEND). Time is a ManualClock:
// tests move it forward instead of sleeping, and run_until_idle() executes whatever is due.
#include "engine/engine.hpp"

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sched.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <latch>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "storage/migrations.hpp"
#include "support/test_db.hpp"

using namespace cairn;
using namespace std::chrono_literals;
using cairn::testing::TestDb;
using engine::Engine;
using engine::EventInput;
using engine::ManualClock;

namespace {

constexpr std::int64_t kT0 = 1'900'000'000'000;

RetryPolicy exact(int attempts, std::chrono::milliseconds initial = 1000ms) {
    RetryPolicy p;
    p.max_attempts = attempts;
    p.initial_delay = initial;
    p.multiplier = 2.0;
    p.max_delay = 60s;
    p.jitter = false;
    return p;
}

struct Fixture {
    TestDb t;
    ManualClock clock{kT0};
    Engine engine{t.db(), clock};
    Fixture() { storage::Migrator(t.db(), {storage::run_store_component()}).apply(); }

    std::string start(const std::string& event, json data = json::object()) {
        auto r = engine.send(EventInput{event, std::move(data)});
        REQUIRE(r.run_ids.size() == 1);
        return r.run_ids[0];
    }
    int idle() { return engine.run_until_idle(); }
    storage::RunRecord run(const std::string& id) { return *engine.store().get_run(id); }
    std::map<std::string, storage::StepRecord> steps(const std::string& id) {
        std::map<std::string, storage::StepRecord> out;
        for (auto& s : engine.store().steps(id)) out[s.key] = s;
        return out;
    }
    std::int64_t count(const std::string& sql) {
        return t.db().exec(sql).front().get<std::int64_t>(0);
    }
};

// The notes table and the "noted" workflow the tests of sends in a transaction share.
void add_notes(Fixture& f) {
    f.t.db().transact([](storage::Transaction& tx) {
        tx.exec_script("CREATE TABLE notes (id TEXT PRIMARY KEY, run_id TEXT)");
    });
    f.engine.add(workflow("noted").on_event("note/added").run([](Context&) { return 1; }));
}

// The caller's check before writing: a note is to be written only if absent.
struct NoteTaken : std::runtime_error {
    NoteTaken() : std::runtime_error("the note exists") {}
};

// Sends `in` in a transaction that also writes note `id` naming the event's first run
// (unless the send is a repeat); with `only_if_absent`, throws NoteTaken first when the
// note exists, writing nothing.
engine::SendResult send_noted(storage::Database& db, Engine& e, const EventInput& in,
                              const std::string& id, bool only_if_absent = false) {
    return db.transact([&](storage::Transaction& tx) {
        if (only_if_absent && !tx.exec("SELECT 1 FROM notes WHERE id = $1", id).empty())
            throw NoteTaken();
        auto sent = e.send(tx, in);
        if (!sent.duplicate)
            tx.exec("INSERT INTO notes (id, run_id) VALUES ($1, $2)", id, sent.run_ids.at(0));
        return sent;
    });
}

}  // namespace

TEST_CASE("stored steps never run again on replay; several new steps run in one execution") {
    Fixture f;
    std::map<std::string, int> calls;
    f.engine.add(workflow("three-steps").on_event("go").run([&](Context& ctx) {
        auto a = ctx.step("a", [&] {
            ++calls["a"];
            return 1;
        });
        auto b = ctx.step("b", [&] {
            ++calls["b"];
            return a.get<int>() + 1;
        });
        ctx.sleep("pause", 10s);
        auto c = ctx.step("c", [&] {
            ++calls["c"];
            return b.get<int>() + 1;
        });
        return json{{"sum", a.get<int>() + b.get<int>() + c.get<int>()}};
    }));
    const auto id = f.start("go");
    CHECK(f.idle() == 1);
    CHECK(calls == std::map<std::string, int>{{"a", 1}, {"b", 1}});
    CHECK(f.run(id).status == "sleeping");

    f.clock.advance(9'999);
    CHECK(f.idle() == 0);  // not due yet
    f.clock.advance(1);
    CHECK(f.idle() == 1);
    CHECK(calls == std::map<std::string, int>{{"a", 1}, {"b", 1}, {"c", 1}});
    auto run = f.run(id);
    CHECK(run.status == "completed");
    CHECK(json::parse(*run.output) == json{{"sum", 6}});
    CHECK(run.started_at == kT0);
    CHECK(run.ended_at == kT0 + 10'000);
    auto steps = f.steps(id);
    CHECK(steps.size() == 4);
    CHECK(steps["pause"].kind == "sleep");
    CHECK(steps["pause"].status == "completed");
    CHECK(f.engine.stats().executions == 2);
}

TEST_CASE("a repeated step name gets a counter in its key") {
    Fixture f;
    f.engine.add(workflow("loop").on_event("go").run([](Context& ctx) {
        int total = 0;
        for (int i = 1; i <= 3; ++i) total += ctx.step("add", [i] { return i; }).get<int>();
        return total;
    }));
    const auto id = f.start("go");
    f.idle();
    auto steps = f.steps(id);
    CHECK(steps.contains("add"));
    CHECK(steps.contains("add#2"));
    CHECK(steps.contains("add#3"));
    CHECK(json::parse(*f.run(id).output) == 6);
}

TEST_CASE("retries follow the policy: the recorded schedule is exponential") {
    Fixture f;
    int calls = 0;
    f.engine.add(workflow("flaky").on_event("go").retry_policy(exact(4)).run([&](Context& ctx) {
        return ctx.step("call", [&] {
            if (++calls < 4) throw std::runtime_error("try again #" + std::to_string(calls));
            return std::string("ok");
        });
    }));
    const auto id = f.start("go");
    f.idle();
    CHECK(f.steps(id)["call"].status == "retrying");
    CHECK(f.steps(id)["call"].wake_at == kT0 + 1000);
    CHECK(f.run(id).status == "queued");
    for (std::int64_t wait : {1000, 2000, 4000}) {
        f.clock.advance(wait - 1);
        CHECK(f.idle() == 0);
        f.clock.advance(1);
        CHECK(f.idle() == 1);
    }
    CHECK(f.run(id).status == "completed");
    CHECK(calls == 4);
    auto attempts = f.engine.store().attempts(id);
    REQUIRE(attempts.size() == 4);
    const std::int64_t starts[] = {kT0, kT0 + 1000, kT0 + 3000, kT0 + 7000};
    for (int i = 0; i < 4; ++i) {
        CHECK(attempts[i].attempt == i + 1);
        CHECK(attempts[i].started_at == starts[i]);
        CHECK(attempts[i].outcome == (i < 3 ? "failed" : "completed"));
    }
    CHECK(json::parse(*attempts[0].error)["message"] == "try again #1");
    CHECK(f.steps(id)["call"].attempts == 4);
}

TEST_CASE("full jitter stays between zero and the capped exponential ceiling") {
    RetryPolicy p;
    p.initial_delay = 100ms;
    p.multiplier = 3.0;
    p.max_delay = 2s;
    CHECK(p.ceiling(1) == 100ms);
    CHECK(p.ceiling(2) == 300ms);
    CHECK(p.ceiling(3) == 900ms);
    CHECK(p.ceiling(4) == 2s);  // capped
    std::mt19937_64 rng(42);
    std::set<std::int64_t> seen;
    for (int i = 0; i < 500; ++i) {
        const auto d = p.delay(3, rng);
        CHECK(d >= 0ms);
        CHECK(d <= 900ms);
        seen.insert(d.count());
    }
    CHECK(seen.size() > 100);  // actually random
}

TEST_CASE("NonRetriableError fails at once; StepFailed can be caught by the workflow") {
    Fixture f;
    f.engine.add(workflow("careful").on_event("go").retries(5).run([](Context& ctx) {
        try {
            ctx.step("charge", []() -> json { throw NonRetriableError("card declined"); });
        } catch (const StepFailed& e) {
            return json{{"recovered", e.error()["message"]}};
        }
        return json{{"recovered", false}};
    }));
    const auto id = f.start("go");
    CHECK(f.idle() == 1);
    CHECK(f.run(id).status == "completed");
    CHECK(json::parse(*f.run(id).output) == json{{"recovered", "card declined"}});
    CHECK(f.steps(id)["charge"].attempts == 1);
    CHECK(f.steps(id)["charge"].status == "failed");
}

TEST_CASE("RetryAfterError chooses the next attempt's time") {
    Fixture f;
    int calls = 0;
    f.engine.add(workflow("rate-limited").on_event("go").run([&](Context& ctx) {
        return ctx.step("api", [&]() -> json {
            if (++calls == 1) throw RetryAfterError("429", 42'000ms);
            return "done";
        });
    }));
    const auto id = f.start("go");
    f.idle();
    CHECK(f.steps(id)["api"].wake_at == kT0 + 42'000);
    f.clock.advance(42'000);
    f.idle();
    CHECK(f.run(id).status == "completed");
}

TEST_CASE("an uncaught StepFailed fails the run and its on-failure handler runs durably") {
    Fixture f;
    f.engine.add(workflow("doomed")
                     .on_event("go")
                     .retry_policy(exact(2, 10ms))
                     .on_failure([](Context& ctx) {
                         return json{{"cleaned_up", ctx.event()["data"]["run_id"]},
                                     {"reason", ctx.event()["data"]["error"]["message"]}};
                     })
                     .run([](Context& ctx) {
                         return ctx.step("boom",
                                         []() -> json { throw std::runtime_error("kaput"); });
                     }));
    const auto id = f.start("go");
    f.idle();
    f.clock.advance(10);
    f.idle();
    auto run = f.run(id);
    CHECK(run.status == "failed");
    CHECK(json::parse(*run.error)["message"] == "kaput");
    CHECK(json::parse(*run.error)["attempt"] == 2);

    auto handlers =
        f.engine.store().list_runs({.workflow_id = "doomed/on-failure"}, std::nullopt, 10).runs;
    REQUIRE(handlers.size() == 1);
    CHECK(handlers[0].status == "completed");
    CHECK(handlers[0].event_name == "cairn/run.failed");
    CHECK(json::parse(*handlers[0].output) == json{{"cleaned_up", id}, {"reason", "kaput"}});
}

TEST_CASE("wait_for_event resumes on the matching event only") {
    Fixture f;
    f.engine.add(workflow("approval").on_event("ticket/created").run([](Context& ctx) {
        auto ev = ctx.wait_for_event("approved", "ticket/approved", "data.ticket", 1h);
        return json{{"approved_by", ev ? (*ev)["data"]["by"] : json(nullptr)}};
    }));
    const auto id = f.start("ticket/created", {{"ticket", 7}});
    f.idle();
    CHECK(f.run(id).status == "waiting");
    CHECK(f.engine.send(EventInput{"ticket/approved", {{"ticket", 8}, {"by", "mallory"}}})
              .waits_resumed == 0);
    CHECK(f.idle() == 0);
    CHECK(f.engine.send(EventInput{"ticket/approved", {{"ticket", 7}, {"by", "alice"}}})
              .waits_resumed == 1);
    CHECK(f.idle() == 1);
    CHECK(f.run(id).status == "completed");
    CHECK(json::parse(*f.run(id).output) == json{{"approved_by", "alice"}});
    // A second matching event finds no one waiting.
    CHECK(f.engine.send(EventInput{"ticket/approved", {{"ticket", 7}, {"by", "bob"}}})
              .waits_resumed == 0);
}

TEST_CASE("wait_for_event gives an empty result when the timeout passes first") {
    Fixture f;
    f.engine.add(workflow("approval").on_event("ticket/created").run([](Context& ctx) {
        auto ev = ctx.wait_for_event("approved", "ticket/approved", "data.ticket", 30min);
        return json{{"timed_out", !ev.has_value()}};
    }));
    const auto id = f.start("ticket/created", {{"ticket", 1}});
    f.idle();
    f.clock.advance(30 * 60 * 1000 - 1);
    CHECK(f.idle() == 0);
    f.clock.advance(1);
    CHECK(f.idle() == 1);
    CHECK(json::parse(*f.run(id).output) == json{{"timed_out", true}});
    CHECK(f.engine.send(EventInput{"ticket/approved", {{"ticket", 1}}}).waits_resumed == 0);
}

TEST_CASE("send_event emits exactly once across replays") {
    Fixture f;
    int flaky = 0;
    f.engine.add(workflow("listener").on_event("ping").run([](Context& ctx) {
        return ctx.event()["data"];
    }));
    f.engine.add(
        workflow("sender").on_event("go").retry_policy(exact(3, 5ms)).run([&](Context& ctx) {
            auto event_id = ctx.send_event("notify", {{"name", "ping"}, {"data", {{"n", 1}}}});
            ctx.step("after", [&] {
                if (++flaky == 1) throw std::runtime_error("forces a replay");
                return 0;
            });
            return json{{"sent", event_id}};
        }));
    const auto id = f.start("go");
    f.idle();
    f.clock.advance(5);
    f.idle();
    CHECK(f.run(id).status == "completed");
    CHECK(f.count("SELECT count(*) FROM events WHERE name = 'ping'") == 1);
    auto listeners = f.engine.store().list_runs({.workflow_id = "listener"}, std::nullopt, 10).runs;
    REQUIRE(listeners.size() == 1);
    CHECK(listeners[0].status == "completed");
    CHECK(json::parse(*f.run(id).output)["sent"] == listeners[0].event_id);
}

TEST_CASE("a replay that asks for operations in another order fails as non-deterministic") {
    Fixture f;
    bool flipped = false;
    f.engine.add(workflow("fickle").on_event("go").run([&](Context& ctx) {
        ctx.step(flipped ? "refund" : "charge", [] { return 1; });
        ctx.sleep("wait", 1s);
        return json(nullptr);
    }));
    const auto id = f.start("go");
    f.idle();
    flipped = true;
    f.clock.advance(1000);
    f.idle();
    auto run = f.run(id);
    CHECK(run.status == "failed");
    const std::string message = json::parse(*run.error)["message"];
    CHECK(message.find("non-deterministic") != std::string::npos);
    CHECK(message.find("'charge'") != std::string::npos);
    CHECK(message.find("'refund'") != std::string::npos);
}

TEST_CASE("cancellation stops a run at its next step boundary") {
    Fixture f;
    std::map<std::string, int> calls;
    std::string self;
    f.engine.add(workflow("cancellable").on_event("go").run([&](Context& ctx) {
        ctx.step("one", [&] {
            ++calls["one"];
            f.engine.cancel(ctx.run_id());  // cancelled while this step runs
            return 1;
        });
        ctx.step("two", [&] {
            ++calls["two"];
            return 2;
        });
        return json(nullptr);
    }));
    const auto id = f.start("go");
    f.idle();
    CHECK(f.run(id).status == "cancelled");
    CHECK(calls == std::map<std::string, int>{{"one", 1}});
    CHECK(f.steps(id)["one"].status == "completed");  // the finished step is kept
    CHECK_FALSE(f.engine.cancel(id));                 // already ended

    // A sleeping run is cancelled without being executed again.
    f.engine.add(workflow("sleeper").on_event("nap").run([&](Context& ctx) {
        ctx.sleep("zz", 1h);
        ++calls["woke"];
        return json(nullptr);
    }));
    const auto sleeper = f.start("nap");
    f.idle();
    CHECK(f.engine.cancel(sleeper));
    f.clock.advance(2 * 3600 * 1000);
    CHECK(f.idle() == 0);
    CHECK(f.run(sleeper).status == "cancelled");
    CHECK_FALSE(calls.contains("woke"));
}

TEST_CASE("per-run and per-step timeouts") {
    Fixture f;
    f.engine.add(workflow("slow-run").on_event("go").run_timeout(5s).run([](Context& ctx) {
        ctx.step("first", [] { return 1; });
        ctx.sleep("long", 10s);
        ctx.step("second", [] { return 2; });
        return json(nullptr);
    }));
    const auto run_id = f.start("go");
    f.idle();
    f.clock.advance(10'000);
    f.idle();
    CHECK(f.run(run_id).status == "failed");
    CHECK(json::parse(*f.run(run_id).error)["type"] == "timeout");
    CHECK_FALSE(f.steps(run_id).contains("second"));

    int calls = 0;
    f.engine.add(workflow("slow-step")
                     .on_event("step")
                     .retry_policy(exact(3, 1ms))
                     .step_timeout(100ms)
                     .run([&](Context& ctx) {
                         return ctx.step("work", [&] {
                             if (++calls == 1)
                                 f.clock.advance(250);  // this attempt overruns its limit
                             return calls;
                         });
                     }));
    const auto step_id = f.start("step");
    f.idle();
    f.clock.advance(1);
    f.idle();
    CHECK(f.run(step_id).status == "completed");
    CHECK(json::parse(*f.run(step_id).output) == 2);
    auto attempts = f.engine.store().attempts(step_id);
    REQUIRE(attempts.size() == 2);
    CHECK(attempts[0].outcome == "timed_out");
    CHECK(attempts[1].outcome == "completed");
}

TEST_CASE("a step in a transaction commits its writes with its record, exactly once") {
    Fixture f;
    f.t.db().exec("CREATE TABLE ledger (id TEXT PRIMARY KEY, attempt BIGINT)");
    std::map<std::string, int> calls;
    f.engine.add(workflow("book").on_event("go").retry_policy(exact(3)).run([&](Context& ctx) {
        ctx.step("before", [&] { return ++calls["before"]; });
        const json n = ctx.transaction("book", [&](storage::Transaction& tx) {
            ++calls["book"];
            tx.exec("INSERT INTO ledger (id, attempt) VALUES ($1, $2)", ctx.run_id(),
                    ctx.attempt());
            if (ctx.attempt() == 1) throw std::runtime_error("refused after writing");
            return tx.exec("SELECT count(*) FROM ledger").front().get<std::int64_t>(0);
        });
        ctx.sleep("pause", 10s);
        return n;
    }));
    const auto id = f.start("go");
    CHECK(f.idle() == 1);
    // The first attempt's row was rolled back with it; the step before it is recorded.
    CHECK(f.count("SELECT count(*) FROM ledger") == 0);
    CHECK(f.steps(id)["before"].status == "completed");
    CHECK(f.steps(id)["book"].status == "retrying");

    f.clock.advance(1'000);
    CHECK(f.idle() == 1);
    CHECK(f.count("SELECT count(*) FROM ledger") == 1);
    CHECK(f.count("SELECT attempt FROM ledger") == 2);
    CHECK(f.steps(id)["book"].status == "completed");
    CHECK(f.steps(id)["book"].output == "1");

    f.clock.advance(10'000);  // the replay returns the recorded result
    CHECK(f.idle() == 1);
    CHECK(f.run(id).status == "completed");
    CHECK(json::parse(*f.run(id).output) == 1);
    CHECK(calls == std::map<std::string, int>{{"before", 1}, {"book", 2}});
    auto attempts = f.engine.store().attempts(id);
    REQUIRE(attempts.size() == 3);
    CHECK(attempts[1].outcome == "failed");
    CHECK(attempts[2].outcome == "completed");
}

TEST_CASE(
    "a step in a transaction carries the record before it; a timeout or lost lease "
    "rolls both back") {
    Fixture f;
    f.t.db().exec("CREATE TABLE ledger (id TEXT PRIMARY KEY, attempt BIGINT)");
    std::map<std::string, int> calls;
    bool steal = true;
    f.engine.add(workflow("book")
                     .on_event("go")
                     .retry_policy(exact(3, 1ms))
                     .step_timeout(100ms)
                     .run([&](Context& ctx) {
                         ctx.step("before", [&] {
                             // Another worker's claim, as far as this execution's fence
                             // can tell: the next write must not land.
                             if (std::exchange(steal, false)) {
                                 f.t.db().exec(
                                     "UPDATE queue SET lease_epoch = lease_epoch + 1 "
                                     "WHERE run_id = $1",
                                     ctx.run_id());
                             }
                             return ++calls["before"];
                         });
                         return ctx.transaction("book", [&](storage::Transaction& tx) {
                             ++calls["book"];
                             tx.exec("INSERT INTO ledger (id, attempt) VALUES ($1, $2)",
                                     ctx.run_id(), calls["book"]);
                             if (calls["book"] == 2) f.clock.advance(250);  // overruns
                         });
                     }));
    const auto id = f.start("go");
    f.idle();
    // The fence failed with the records: neither the step before nor the row landed.
    CHECK(f.count("SELECT count(*) FROM ledger") == 0);
    CHECK(f.steps(id).empty());
    CHECK(f.engine.stats().leases_lost == 1);

    f.clock.advance(30'000);  // the lease expires; the run is claimed again from the top
    f.idle();
    f.clock.advance(1);
    f.idle();
    CHECK(f.run(id).status == "completed");
    CHECK(calls == std::map<std::string, int>{{"before", 2}, {"book", 3}});
    // The second execution's attempt overran its timeout: rolled back, then retried.
    CHECK(f.count("SELECT count(*) FROM ledger") == 1);
    CHECK(f.count("SELECT attempt FROM ledger") == 3);
    auto attempts = f.engine.store().attempts(id);
    REQUIRE(attempts.size() == 3);
    CHECK(attempts[0].step_key == "before");
    CHECK(attempts[1].outcome == "timed_out");
    CHECK(attempts[2].outcome == "completed");
}

TEST_CASE("invoke runs a child workflow and returns its result or its failure") {
    Fixture f;
    f.engine.add(workflow("times-ten").run([](Context& ctx) {
        return ctx.step("mul", [&] { return ctx.event()["data"]["x"].get<int>() * 10; });
    }));
    f.engine.add(workflow("always-fails").retry_policy(exact(1)).run([](Context& ctx) {
        return ctx.step("nope", []() -> json { throw std::runtime_error("child broke"); });
    }));
    f.engine.add(workflow("parent").on_event("go").run([](Context& ctx) {
        auto r = ctx.invoke("compute", "times-ten", {{"x", 4}});
        std::string failure;
        try {
            ctx.invoke("broken", "always-fails", json::object());
        } catch (const StepFailed& e) {
            failure = e.error()["message"];
        }
        return json{{"result", r}, {"failure", failure}};
    }));
    const auto id = f.start("go");
    f.idle();
    CHECK(f.run(id).status == "completed");
    CHECK(json::parse(*f.run(id).output) == json{{"result", 40}, {"failure", "child broke"}});
    CHECK(f.steps(id)["compute"].kind == "invoke");
}

TEST_CASE("log lines are stored with the step attempt") {
    Fixture f;
    f.engine.add(workflow("chatty").on_event("go").run([](Context& ctx) {
        return ctx.step("talk", [&] {
            ctx.log("attempt " + std::to_string(ctx.attempt()));
            return 1;
        });
    }));
    const auto id = f.start("go");
    f.idle();
    auto attempts = f.engine.store().attempts(id);
    REQUIRE(attempts.size() == 1);
    CHECK(json::parse(attempts[0].logs) == json::array({"attempt 1"}));
    CHECK(attempts[0].worker == f.engine.worker_id());
}

TEST_CASE("a repeated event id or idempotency key starts nothing new") {
    Fixture f;
    f.engine.add(workflow("once").on_event("go").run([](Context&) { return 1; }));
    EventInput e{"go"};
    e.idempotency_key = "order-17";
    auto first = f.engine.send(e);
    auto again = f.engine.send(e);
    CHECK(again.duplicate);
    CHECK(again.run_ids == first.run_ids);
    CHECK(f.count("SELECT count(*) FROM runs") == 1);
}

TEST_CASE("a send in the caller's transaction commits with its rows, on every path") {
    Fixture f;
    add_notes(f);
    f.engine.add(workflow("approval").on_event("ticket/created").run([](Context& ctx) {
        return ctx.wait_for_event("approved", "note/added", "data.ticket", 1h).has_value();
    }));
    auto note_run = [&](const std::string& id) {
        auto r = f.t.db().exec("SELECT run_id FROM notes WHERE id = $1", id);
        return r.empty() ? std::string() : r.front().get<std::string>(0);
    };
    storage::Database& db = f.t.db();

    // A plain event.
    auto a = send_noted(db, f.engine, EventInput{"note/added", {{"ticket", 1}}}, "a");
    REQUIRE(a.run_ids.size() == 1);
    CHECK(note_run("a") == a.run_ids[0]);
    CHECK(f.idle() == 1);
    CHECK(f.run(a.run_ids[0]).status == "completed");

    // An event a run waits for: resumed in the same commit as the note.
    const auto waiting = f.start("ticket/created", {{"ticket", 2}});
    f.idle();
    REQUIRE(f.run(waiting).status == "waiting");
    auto b = send_noted(db, f.engine, EventInput{"note/added", {{"ticket", 2}}}, "b");
    CHECK(b.waits_resumed == 1);
    CHECK(note_run("b") == b.run_ids.at(0));
    CHECK(f.idle() == 2);
    CHECK(f.run(waiting).status == "completed");

    // A repeat: the caller sees the first delivery's runs.
    EventInput keyed{"note/added", {{"ticket", 3}}};
    keyed.idempotency_key = "note-3";
    auto c = send_noted(db, f.engine, keyed, "c");
    auto again = send_noted(db, f.engine, keyed, "c-again");
    CHECK(again.duplicate);
    CHECK(again.run_ids == c.run_ids);
    CHECK(note_run("c-again").empty());

    // A row that cannot be inserted: neither it nor the event is written.
    const auto events = f.count("SELECT count(*) FROM events");
    CHECK_THROWS_AS(send_noted(db, f.engine, EventInput{"note/added", {{"ticket", 4}}}, "a"),
                    storage::UniqueViolation);
    CHECK(f.count("SELECT count(*) FROM events") == events);
    CHECK(f.count("SELECT count(*) FROM notes") == 3);
    f.idle();

    // The caller's own check refuses the write: nothing is written, for a plain event and
    // for one a run waits for alike, and the waiting run stays waiting.
    const auto waits = f.start("ticket/created", {{"ticket", 6}});
    f.idle();
    REQUIRE(f.run(waits).status == "waiting");
    const auto before = f.count("SELECT count(*) FROM events");
    CHECK_THROWS_AS(send_noted(db, f.engine, EventInput{"note/added", {{"ticket", 5}}}, "a", true),
                    NoteTaken);
    CHECK_THROWS_AS(send_noted(db, f.engine, EventInput{"note/added", {{"ticket", 6}}}, "b", true),
                    NoteTaken);
    CHECK(f.count("SELECT count(*) FROM events") == before);
    CHECK(f.idle() == 0);
    CHECK(f.run(waits).status == "waiting");
    auto e = send_noted(db, f.engine, EventInput{"note/added", {{"ticket", 6}}}, "e", true);
    CHECK(e.waits_resumed == 1);
    CHECK(note_run("e") == e.run_ids.at(0));
    CHECK(f.idle() == 2);
    CHECK(f.run(waits).status == "completed");

    // Several events in one transaction: one result each, in order; a repeat among them
    // names the first delivery, an awaited one resumes its run.
    const auto waits2 = f.start("ticket/created", {{"ticket", 8}});
    f.idle();
    std::vector<EventInput> several{EventInput{"note/added", {{"ticket", 7}}},
                                    EventInput{"note/added", {{"ticket", 8}}}, keyed,
                                    EventInput{"other/name"}};
    const auto sent = db.transact(
        [&](storage::Transaction& tx) { return f.engine.send(tx, several); });
    REQUIRE(sent.size() == 4);
    CHECK(sent[0].run_ids.size() == 1);
    CHECK_FALSE(sent[0].duplicate);
    CHECK(sent[1].waits_resumed == 1);
    CHECK(sent[2].duplicate);
    CHECK(sent[2].run_ids == c.run_ids);
    CHECK(sent[3].run_ids.empty());
    CHECK(f.engine.store().get_event(sent[3].event_id)->name == "other/name");
    CHECK(f.idle() == 3);
    CHECK(f.run(waits2).status == "completed");
}

TEST_CASE("sends in transactions while workers run: each lands with its rows, or fails alone") {
    TestDb t;
    storage::Migrator(t.db(), {storage::run_store_component()}).apply();
    t.db().transact([](storage::Transaction& tx) {
        tx.exec_script("CREATE TABLE notes (id TEXT PRIMARY KEY, run_id TEXT)");
    });
    engine::SystemClock clock;
    Engine e(t.db(), clock);
    e.add(workflow("noted").on_event("note/added").run([](Context& ctx) {
        ctx.step("a", [] { return 1; });
        return ctx.step("b", [] { return 2; });
    }));
    auto count = [&](const std::string& sql) {
        return t.db().exec(sql).front().get<std::int64_t>(0);
    };
    // On SQLite these transactions share the commits of the runs' step records (the
    // database's WriteBatcher); a transaction that fails must fail alone and reach its own
    // caller as thrown. The runs are handed to this process's idle workers or queued.
    e.start({.threads = 4, .lease = 5s, .poll = 20ms});
    constexpr int kSenders = 8, kEach = 25;
    std::atomic<int> refused{0}, unmet{0};
    std::vector<std::thread> senders;
    for (int s = 0; s < kSenders; ++s) {
        senders.emplace_back([&, s] {
            for (int i = 0; i < kEach; ++i) {
                const std::string id = "n-" + std::to_string(s) + "-" + std::to_string(i);
                send_noted(t.db(), e, EventInput{"note/added", {{"id", id}}}, id, true);
                try {  // the same note id again, on the caller's check: not sent
                    send_noted(t.db(), e, EventInput{"note/added", {{"again", id}}}, id, true);
                } catch (const NoteTaken&) {
                    ++unmet;
                }
                try {  // the same note id again: refused, with its event
                    send_noted(t.db(), e, EventInput{"note/added", {{"again", id}}}, id);
                } catch (const storage::UniqueViolation&) {
                    ++refused;
                }
            }
        });
    }
    for (auto& th : senders) th.join();
    constexpr int kRuns = kSenders * kEach;
    for (int i = 0;
         i < 400 && count("SELECT count(*) FROM runs WHERE status = 'completed'") < kRuns; ++i)
        std::this_thread::sleep_for(25ms);
    e.stop();
    CHECK(unmet == kRuns);
    CHECK(refused == kRuns);
    CHECK(count("SELECT count(*) FROM events") == kRuns);
    CHECK(count("SELECT count(*) FROM notes") == kRuns);
    // Each note names the run of its own event: no rows crossed between shared commits.
    CHECK(count("SELECT count(*) FROM notes n JOIN runs r ON r.id = n.run_id "
                "JOIN events ev ON ev.id = r.event_id "
                "WHERE ev.data LIKE '%\"' || n.id || '\"%'") == kRuns);
    CHECK(count("SELECT count(*) FROM runs WHERE status = 'completed'") == kRuns);
    CHECK(count("SELECT count(*) FROM steps") == 2 * kRuns);
    if (t.db().backend() == storage::Backend::sqlite) {
        const auto stats = t.db().writes().stats();
        CHECK(stats.shared_writes > stats.shared_batches);  // some commits were shared
    }
}

TEST_CASE("plain sends while workers run: each lands once, repeats and awaited events too") {
    TestDb t;
    storage::Migrator(t.db(), {storage::run_store_component()}).apply();
    engine::SystemClock clock;
    Engine e(t.db(), clock);
    e.add(workflow("counted").on_event("item/added").run([](Context& ctx) {
        return ctx.step("a", [] { return 1; });
    }));
    e.add(workflow("approval").on_event("order/placed").run([](Context& ctx) {
        return ctx.wait_for_event("paid", "order/paid", "data.order", 1h).has_value();
    }));
    auto count = [&](const std::string& sql) {
        return t.db().exec(sql).front().get<std::int64_t>(0);
    };
    auto wait_until = [&](const std::string& sql, std::int64_t n) {
        for (int i = 0; i < 400 && count(sql) < n; ++i) std::this_thread::sleep_for(25ms);
        return count(sql);
    };
    // On Postgres concurrent sends share one statement (the WriteBatcher's batches); an
    // event that statement leaves out, a repeat or one a run waits for, is written on its
    // own in a transaction, and the caller cannot tell the two apart.
    e.start({.threads = 4, .lease = 5s, .poll = 20ms});
    const auto order = e.send(EventInput{"order/placed", {{"order", 7}}});
    REQUIRE(order.run_ids.size() == 1);
    REQUIRE(wait_until("SELECT count(*) FROM waits", 1) == 1);

    constexpr int kSenders = 4, kEach = 30;
    std::mutex mu;
    std::map<std::string, std::vector<engine::SendResult>> by_key;  // guarded by mu
    std::vector<std::thread> senders;
    for (int s = 0; s < kSenders; ++s) {
        senders.emplace_back([&, s] {
            for (int i = 0; i < kEach; ++i) {
                EventInput in{"item/added", {{"s", s}, {"i", i}}};
                in.idempotency_key = "item-" + std::to_string(i);  // every sender repeats it
                auto sent = e.send(in);
                std::lock_guard lock(mu);
                by_key[*in.idempotency_key].push_back(std::move(sent));
            }
        });
    }
    const auto paid = e.send(EventInput{"order/paid", {{"order", 7}}});
    for (auto& th : senders) th.join();
    e.stop();  // drains what was queued; a second start finishes the rest
    e.start({.threads = 4, .lease = 5s, .poll = 20ms});
    CHECK(wait_until("SELECT count(*) FROM runs WHERE status = 'completed'", kEach + 1) ==
          kEach + 1);
    e.stop();

    CHECK(paid.waits_resumed == 1);
    CHECK(e.store().get_run(order.run_ids[0])->status == "completed");
    CHECK(by_key.size() == kEach);
    for (const auto& [key, sends] : by_key) {
        REQUIRE(sends.size() == kSenders);
        int fresh = 0;
        for (const auto& sent : sends) {
            CHECK(sent.run_ids.size() == 1);
            CHECK(sent.run_ids == sends.front().run_ids);  // every repeat names the first run
            CHECK(sent.event_id == sends.front().event_id);
            if (!sent.duplicate) ++fresh;
        }
        CHECK(fresh == 1);
    }
    CHECK(count("SELECT count(*) FROM events WHERE name = 'item/added'") == kEach);
    CHECK(count("SELECT count(*) FROM runs WHERE workflow_id = 'counted'") == kEach);
    CHECK(count("SELECT count(*) FROM steps WHERE step_key = 'a'") == kEach);
}

TEST_CASE("a send that fails in a shared batch fails alone: the sends beside it land") {
    TestDb t;
    storage::Migrator(t.db(), {storage::run_store_component()}).apply();
    // The database refuses events named "refused": the statement of a batch that holds one
    // fails as a whole (on Postgres, sends while workers run share one statement).
    if (t.db().backend() == storage::Backend::postgres) {
        t.db().exec(
            "CREATE FUNCTION refuse_event() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.name = 'refused' THEN RAISE EXCEPTION 'event refused by a trigger'; END IF; "
            "RETURN NEW; END $$");
        t.db().exec(
            "CREATE TRIGGER refuse_event BEFORE INSERT ON events FOR EACH ROW "
            "EXECUTE FUNCTION refuse_event()");
    } else {
        t.db().exec(
            "CREATE TRIGGER refuse_event BEFORE INSERT ON events WHEN NEW.name = 'refused' "
            "BEGIN SELECT RAISE(ABORT, 'event refused by a trigger'); END");
    }
    engine::SystemClock clock;
    Engine e(t.db(), clock);
    e.add(workflow("taken").on_event("taken").run(
        [](Context& ctx) { return ctx.step("a", [] { return 1; }); }));
    e.add(workflow("never").on_event("refused").run(
        [](Context& ctx) { return ctx.step("a", [] { return 1; }); }));
    e.start({.threads = 4, .lease = 5s, .poll = 20ms});
    constexpr int kSenders = 6, kEach = 30;
    std::atomic<int> sent{0}, refused{0}, wrong{0};
    std::vector<std::thread> senders;
    for (int s = 0; s < kSenders; ++s) {
        senders.emplace_back([&, s] {
            for (int i = 0; i < kEach; ++i) {
                const bool bad = (s + i) % 5 == 0;
                try {
                    const auto r =
                        e.send(EventInput{bad ? "refused" : "taken", {{"s", s}, {"i", i}}});
                    if (bad || r.run_ids.size() != 1) ++wrong;
                    ++sent;
                } catch (const std::exception&) {
                    if (!bad) ++wrong;
                    ++refused;
                }
            }
        });
    }
    for (auto& th : senders) th.join();
    const int taken = sent.load();
    for (int i = 0; i < 100 && e.await_runs_ended(taken - 1, 100ms) < taken; ++i) {
    }
    e.stop();
    CHECK(wrong == 0);  // every refused send threw, every other one returned its run
    CHECK(refused == kSenders * kEach / 5);
    CHECK(taken == kSenders * kEach - refused);
    auto count = [&](const std::string& sql) {
        return t.db().exec(sql).front().get<std::int64_t>(0);
    };
    CHECK(count("SELECT count(*) FROM events WHERE name = 'taken'") == taken);
    CHECK(count("SELECT count(*) FROM events WHERE name = 'refused'") == 0);
    CHECK(count("SELECT count(*) FROM runs WHERE workflow_id = 'never'") == 0);
    CHECK(count("SELECT count(*) FROM runs WHERE status = 'completed'") == taken);
}

TEST_CASE("a run that sleeps is claimed again when its sleep ends, not at the next poll") {
    TestDb t;
    storage::Migrator(t.db(), {storage::run_store_component()}).apply();
    engine::SystemClock clock;
    Engine e(t.db(), clock);
    e.add(workflow("napper").on_event("nap").run([](Context& ctx) {
        ctx.sleep("nap", 300ms);
        return ctx.step("after", [] { return 1; });
    }));
    // A poll far longer than the sleep: only the dispatcher's own timer can end it early.
    e.start({.threads = 2, .lease = 30s, .poll = 60s});
    const auto t0 = std::chrono::steady_clock::now();
    const auto sent = e.send(EventInput{"nap"});
    REQUIRE(sent.run_ids.size() == 1);
    std::string status;
    for (int i = 0; i < 400 && status != "completed"; ++i) {
        std::this_thread::sleep_for(25ms);
        status = e.store().get_run(sent.run_ids[0])->status;
    }
    const auto took = std::chrono::steady_clock::now() - t0;
    e.stop();
    CHECK(status == "completed");
    CHECK(took >= 300ms);
    CHECK(took < 10s);  // the 60 s poll did not end it
}

TEST_CASE("await_runs_ended returns once runs' ends are committed, and counts only ended runs") {
    TestDb t;
    storage::Migrator(t.db(), {storage::run_store_component()}).apply();
    engine::SystemClock clock;
    Engine e(t.db(), clock);
    e.add(workflow("fine").on_event("fine").run(
        [](Context& ctx) { return ctx.step("one", [] { return 1; }); }));
    e.add(workflow("broken").on_event("broken").run([](Context& ctx) -> json {
        ctx.step("one", []() -> json { throw NonRetriableError("no"); });
        return 0;
    }));
    e.add(workflow("sleepy").on_event("sleepy").run([](Context& ctx) {
        ctx.sleep("long", 1h);
        return 0;
    }));
    e.start({.threads = 2, .lease = 30s, .poll = 50ms});
    CHECK(e.await_runs_ended(0, 20ms) == 0);  // nothing ended: the timeout returns
    const auto sleepy = e.send(EventInput{"sleepy"}).run_ids.at(0);
    const auto fine = e.send(EventInput{"fine"}).run_ids.at(0);
    const auto broken = e.send(EventInput{"broken"}).run_ids.at(0);
    std::int64_t ended = 0;
    for (int i = 0; i < 100 && ended < 2; ++i) ended = e.await_runs_ended(ended, 100ms);
    REQUIRE(ended == 2);
    // Read at once: each end was committed before it was counted.
    CHECK(e.store().get_run(fine)->status == "completed");
    CHECK(e.store().get_run(broken)->status == "failed");
    // The sleeping run suspended; it has not ended and is not counted.
    CHECK(e.await_runs_ended(2, 200ms) == 2);
    CHECK(e.store().get_run(sleepy)->status != "completed");
    CHECK(e.stats().runs_ended == 2);
    e.stop();
}

TEST_CASE("a send while workers run hands its runs to idle threads, or queues them") {
    TestDb t;
    storage::Migrator(t.db(), {storage::run_store_component()}).apply();
    engine::SystemClock clock;
    Engine e(t.db(), clock);
    std::atomic<bool> holding{false}, release{false};
    e.add(workflow("quick").on_event("quick").run(
        [](Context& ctx) { return ctx.step("one", [] { return 1; }); }));
    e.add(workflow("hold").on_event("hold").run([&](Context& ctx) {
        return ctx.step("wait", [&] {
            holding = true;
            while (!release) std::this_thread::sleep_for(1ms);
            return 1;
        });
    }));
    e.start({.threads = 1, .lease = 30s, .poll = 50ms});
    auto status = [&](const std::string& id) { return e.store().get_run(id)->status; };
    auto await_ended = [&](std::int64_t n) {  // until n runs ended, 10 s at most
        for (int i = 0; i < 100 && e.await_runs_ended(n - 1, 100ms) < n; ++i) {
        }
    };

    // The thread is idle: the run is written claimed by this engine and runs at once.
    const auto first = e.send(EventInput{"quick"}).run_ids.at(0);
    await_ended(1);
    CHECK(status(first) == "completed");
    CHECK(e.store().get_run(first)->worker == e.worker_id());

    // The only thread is busy: the next run waits in the queue, unclaimed, until it frees.
    const auto held = e.send(EventInput{"hold"}).run_ids.at(0);
    for (int i = 0; i < 1000 && !holding; ++i) std::this_thread::sleep_for(5ms);
    REQUIRE(holding);
    const auto queued = e.send(EventInput{"quick", {{"n", 2}}}).run_ids.at(0);
    CHECK(status(queued) == "queued");
    CHECK(t.db()
              .exec("SELECT count(*) FROM queue WHERE run_id = $1 AND lease_owner IS NULL", queued)
              .front()
              .get<int>(0) == 1);
    release = true;
    await_ended(3);
    e.stop();
    CHECK(status(held) == "completed");
    CHECK(status(queued) == "completed");
}

TEST_CASE("registration refuses bad workflows") {
    Fixture f;
    f.engine.add(workflow("a").run([](Context&) { return 1; }));
    CHECK_THROWS_AS(f.engine.add(workflow("a").run([](Context&) { return 1; })),
                    std::invalid_argument);
    CHECK_THROWS_AS(f.engine.add(workflow("").run([](Context&) { return 1; })),
                    std::invalid_argument);
    CHECK_THROWS_AS(f.engine.add(workflow("b").run(nullptr)), std::invalid_argument);
    CHECK_THROWS_AS(f.engine.send(EventInput{""}), std::invalid_argument);
}

TEST_CASE("worker threads run many runs to completion and stop gracefully") {
    TestDb t;
    storage::Migrator(t.db(), {storage::run_store_component()}).apply();
    engine::SystemClock clock;
    Engine e(t.db(), clock);
    std::atomic<int> step_calls{0};
    e.add(workflow("three").on_event("go").run([&](Context& ctx) {
        for (int i = 0; i < 3; ++i) ctx.step("s", [&] { return ++step_calls; });
        return ctx.run_id();
    }));
    e.start({.threads = 4, .lease = 5s, .poll = 50ms});
    constexpr int kRuns = 60;
    for (int i = 0; i < kRuns; ++i) e.send(EventInput{"go", {{"i", i}}});
    auto completed = [&] {
        return t.db()
            .exec("SELECT count(*) FROM runs WHERE status = 'completed'")
            .front()
            .get<int>(0);
    };
    for (int i = 0; i < 400 && completed() < kRuns; ++i) std::this_thread::sleep_for(50ms);
    e.stop();
    CHECK(completed() == kRuns);
    CHECK(step_calls == kRuns * 3);
    CHECK(t.db().exec("SELECT count(*) FROM attempt_history").front().get<int>(0) == kRuns * 3);
}

TEST_CASE("step writes that arrive together all land, and a stopped engine starts again") {
    TestDb t;
    storage::Migrator(t.db(), {storage::run_store_component()}).apply();
    engine::SystemClock clock;
    Engine e(t.db(), clock);
    constexpr int kThreads = 8;
    // Every run of the first round finishes step "a" at the same moment, so their writes
    // arrive together and most queue behind the first (on SQLite, for the writer thread;
    // how many share a commit depends on the scheduler, so it is not checked).
    std::latch together(kThreads);
    std::atomic<bool> first_round{true};
    e.add(workflow("pair").on_event("go").run([&](Context& ctx) {
        ctx.step("a", [&] {
            if (first_round) together.arrive_and_wait();
            return 1;
        });
        ctx.step("b", [] { return 2; });
        return 3;
    }));
    auto completed = [&] {
        return t.db()
            .exec("SELECT count(*) FROM runs WHERE status = 'completed'")
            .front()
            .get<int>(0);
    };
    auto wait_for = [&](int n) {
        for (int i = 0; i < 400 && completed() < n; ++i) std::this_thread::sleep_for(25ms);
    };

    e.start({.threads = kThreads, .lease = 5s, .poll = 50ms});
    for (int i = 0; i < kThreads; ++i) e.send(EventInput{"go", {{"i", i}}});
    wait_for(kThreads);
    e.stop();
    CHECK(completed() == kThreads);
    // Only a writer thread commits a batch of several writes, and its CPU time is
    // counted after each batch.
    const auto stats = t.db().writes().stats();
    if (stats.shared_batches > 0) CHECK(stats.writer_cpu_ns > 0);

    first_round = false;
    e.start({.threads = 2, .lease = 5s, .poll = 50ms});
    for (int i = 0; i < 20; ++i) e.send(EventInput{"go", {{"i", i}}});
    wait_for(kThreads + 20);
    e.stop();
    CHECK(completed() == kThreads + 20);
    CHECK(t.db().exec("SELECT count(*) FROM steps").front().get<int>(0) == 2 * (kThreads + 20));
}

// The scheduling policy of each of this process's threads by name (SCHED_OTHER 0,
// SCHED_BATCH 3), from /proc/self/task/*/stat: the 39th field after the name.
static std::map<std::string, std::set<int>> policies_by_thread_name() {
    std::map<std::string, std::set<int>> out;
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
        std::ifstream stat(task.path() / "stat");
        std::string line;
        if (!std::getline(stat, line)) continue;  // the thread has just ended
        const auto close = line.rfind(')');
        const auto open = line.find('(');
        if (close == std::string::npos || open == std::string::npos) continue;
        std::istringstream rest(line.substr(close + 2));
        std::string field;
        for (int i = 3; i <= 41 && rest >> field; ++i) {
            if (i == 41) out[line.substr(open + 1, close - open - 1)].insert(std::stoi(field));
        }
    }
    return out;
}

TEST_CASE("worker threads run under SCHED_BATCH, the dispatcher under the normal policy") {
    Fixture f;
    std::map<std::string, std::set<int>> seen;
    std::atomic<int> step_policy{-1};  // set after `seen`
    f.engine.add(workflow("look").on_event("go").run([&](Context& ctx) {
        return ctx.step("a", [&] {
            seen = policies_by_thread_name();
            step_policy = sched_getscheduler(0);
            return 1;
        });
    }));
    f.engine.start({.threads = 2, .lease = 5s, .poll = 20ms});
    f.start("go");
    // Generous: on a loaded machine the first claim can take seconds, and a step that ran
    // only during stop() would no longer see the dispatcher, which stops first.
    for (int i = 0; i < 3000 && step_policy == -1; ++i) std::this_thread::sleep_for(10ms);
    REQUIRE(step_policy != -1);  // `seen` is the step's from here on, not written again
    // One listing of /proc/self/task is not a snapshot, so a thread can be missing from
    // it. Look again while the engine runs until every kind of thread has been seen. (The
    // database's writer threads, which the workers' commits wake, run under the normal
    // policy: write_batcher_test.)
    const auto seen_all = [&] {
        return seen.contains("cairn-dispatch") && seen.contains("cairn-worker");
    };
    for (int i = 0; i < 500 && !seen_all(); ++i) {
        std::this_thread::sleep_for(10ms);
        for (auto& [name, p] : policies_by_thread_name()) seen[name].insert(p.begin(), p.end());
    }
    f.engine.stop();
    std::string listing;
    for (const auto& [name, p] : seen) listing += fmt::format("{}: {}; ", name, fmt::join(p, ","));
    INFO("policies seen: " << listing);
    // A woken worker does not preempt the writer thread whose commit woke it.
    CHECK(step_policy == SCHED_BATCH);
    CHECK(seen["cairn-worker"] == std::set<int>{SCHED_BATCH});
    CHECK(seen["cairn-dispatch"] == std::set<int>{SCHED_OTHER});
}

TEST_CASE("retry re-queues a failed run and keeps its completed steps") {
    Fixture f;
    std::map<std::string, int> calls;
    bool broken = true;
    f.engine.add(
        workflow("fragile").on_event("go").retry_policy(exact(2, 5ms)).run([&](Context& ctx) {
            ctx.step("a", [&] { return ++calls["a"]; });
            return ctx.step("b", [&] {
                ++calls["b"];
                if (broken) throw std::runtime_error("dependency down");
                return 7;
            });
        }));
    const auto id = f.start("go");
    f.idle();
    f.clock.advance(5);
    f.idle();
    REQUIRE(f.run(id).status == "failed");
    CHECK(f.engine.retry(id) == storage::RunStore::RetryResult::ok);
    CHECK(f.run(id).status == "queued");
    CHECK(f.run(id).attempt == 1);
    broken = false;
    f.idle();
    CHECK(f.run(id).status == "completed");
    CHECK(json::parse(*f.run(id).output) == 7);
    CHECK(calls["a"] == 1);  // kept
    CHECK(calls["b"] == 3);  // two failed attempts, then one in the new generation
    auto attempts = f.engine.store().attempts(id);
    REQUIRE(attempts.size() == 4);
    CHECK(attempts.back().generation == 1);
    CHECK(attempts.back().attempt == 1);
    CHECK(attempts.back().outcome == "completed");

    CHECK(f.engine.retry(id) == storage::RunStore::RetryResult::not_ended);
    CHECK(f.engine.retry("no-such-run") == storage::RunStore::RetryResult::not_found);
}

TEST_CASE("replay starts a new run from scratch or from a given step") {
    Fixture f;
    std::map<std::string, int> calls;
    f.engine.add(workflow("abc").on_event("go").run([&](Context& ctx) {
        int total = 0;
        for (const char* k : {"a", "b", "c"})
            total += ctx.step(k, [&] { return ++calls[k]; }).get<int>();
        return total;
    }));
    const auto id = f.start("go");
    f.idle();
    REQUIRE(f.run(id).status == "completed");

    auto from_b = f.engine.replay(id, std::string("b"));
    REQUIRE(std::holds_alternative<std::string>(from_b));
    const auto replay_id = std::get<std::string>(from_b);
    CHECK(replay_id != id);
    f.idle();
    CHECK(calls == std::map<std::string, int>{{"a", 1}, {"b", 2}, {"c", 2}});
    auto replayed = f.run(replay_id);
    CHECK(replayed.status == "completed");
    CHECK(replayed.replay_of == id);
    CHECK(replayed.event_id == f.run(id).event_id);
    CHECK(json::parse(*replayed.output) == 1 + 2 + 2);

    auto scratch = f.engine.replay(id);
    REQUIRE(std::holds_alternative<std::string>(scratch));
    f.idle();
    CHECK(calls == std::map<std::string, int>{{"a", 2}, {"b", 3}, {"c", 3}});

    CHECK(std::get<storage::RunStore::ReplayError>(f.engine.replay(id, std::string("zzz"))) ==
          storage::RunStore::ReplayError::unknown_step);
    CHECK(std::get<storage::RunStore::ReplayError>(f.engine.replay("nope")) ==
          storage::RunStore::ReplayError::not_found);
}

TEST_CASE(
    "on Postgres, an event sent by another process wakes idle workers at once (LISTEN/NOTIFY)") {
    if (cairn::testing::test_backend() != storage::Backend::postgres)
        return;  // SQLite: one process
    TestDb t;
    storage::Migrator(t.db(), {storage::run_store_component()}).apply();
    engine::SystemClock clock;
    Engine worker(t.db(), clock);
    auto flow = [] {
        return workflow("ping").on_event("ping").run([](Context& ctx) { return ctx.run_id(); });
    };
    worker.add(flow());
    worker.start({.threads = 1, .lease = 5s, .poll = 60s});  // polling alone would take a minute
    std::this_thread::sleep_for(300ms);                      // let the listener connect

    auto other_db = t.open_another();  // another process's connection pool
    Engine sender(*other_db, clock);
    sender.add(flow());
    // Each way of sending announces the new run after its commit.
    auto wait_completed = [&](const std::string& id) {
        std::string status;
        for (int i = 0; i < 100 && status != "completed"; ++i) {
            std::this_thread::sleep_for(50ms);
            status = worker.store().get_run(id)->status;
        }
        return status;
    };
    CHECK(wait_completed(sender.send(EventInput{"ping"}).run_ids.at(0)) == "completed");
    const auto in_tx = other_db->transact(
        [&](storage::Transaction& tx) { return sender.send(tx, EventInput{"ping"}); });
    CHECK(wait_completed(in_tx.run_ids.at(0)) == "completed");
    worker.stop();
}
