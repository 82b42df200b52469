// Engine semantics on SQLite and Postgres (CAIRN_TEST_BACKEND): what a run records and
// replays, retries, waits, timeouts, cancellation, and operating runs.
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

#include "engine/fixture.hpp"

using namespace cairn;
using namespace cairn::engine_test;
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
