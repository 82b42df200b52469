// Flow control's rules on the backend under test, with the manual clock: each control's
// starts, holds and skips (docs/flow-control.md).

#include "engine/detail/flow.hpp"

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>

#include "fixture.hpp"

namespace cairn::engine_test {
namespace {

std::int64_t started_at(Fixture& f, const std::string& id) {
    return f.run(id).started_at.value_or(-1);
}

std::string held_message(Fixture& f, const std::string& id) {
    const json h = f.engine.held_back(f.run(id));
    return h.is_null() ? "" : h["message"].get<std::string>();
}

}  // namespace

TEST_CASE("gcra: one start per interval, a burst after a quiet spell") {
    using engine::detail::gcra;
    auto g = gcra(std::nullopt, 1000, 100, 0);
    CHECK(g.allowed_at == 1000);
    CHECK(g.next_tat == 1100);
    g = gcra(1100, 1050, 100, 0);  // too early: allowed at the tat
    CHECK(g.allowed_at == 1100);
    CHECK(g.next_tat == 1200);
    g = gcra(1100, 1050, 100, 200);  // within the tolerance
    CHECK(g.allowed_at == 1050);
    g = gcra(500, 1000, 100, 0);  // idle: the past tat does not count
    CHECK(g.allowed_at == 1000);
    CHECK(g.next_tat == 1100);
}

TEST_CASE("flow: malformed settings fail registration") {
    Fixture f;
    auto fn = [](Context&) { return 1; };
    CHECK_THROWS_AS(f.engine.add(workflow("a").on_event("x").concurrency(0).run(fn)),
                    std::invalid_argument);
    CHECK_THROWS_AS(
        f.engine.add(workflow("b").on_event("x").concurrency(1, "event.data.(").run(fn)),
        std::invalid_argument);
    CHECK_THROWS_AS(
        f.engine.add(
            workflow("c").on_event("x").concurrency(1).concurrency(1, "a").concurrency(1, "b").run(
                fn)),
        std::invalid_argument);
    CHECK_THROWS_AS(f.engine.add(workflow("d").on_event("x").throttle({1, 0ms, 1, ""}).run(fn)),
                    std::invalid_argument);
    CHECK_THROWS_AS(
        f.engine.add(workflow("e").on_event("x").debounce({1s, "", {}}).batch({2, 1s, ""}).run(fn)),
        std::invalid_argument);
    CHECK_NOTHROW(f.engine.add(
        workflow("ok").on_event("x").concurrency(2, "event.data.k").concurrency(5).run(fn)));
}

TEST_CASE("concurrency: a sleeping run holds no slot; the parked run starts when one frees") {
    Fixture f;
    f.engine.add(workflow("c").on_event("go").concurrency(1, "event.data.k").run([](Context& ctx) {
        ctx.step("a", [] { return 1; });
        ctx.sleep("nap", 10s);
        return ctx.step("b", [] { return 2; });
    }));
    const std::string first = f.start("go", {{"k", "x"}});
    const std::string second = f.start("go", {{"k", "x"}});
    const std::string other = f.start("go", {{"k", "y"}});
    f.idle();
    // Each slept after its first step; the second started once the first slept.
    CHECK(f.run(first).status == "sleeping");
    CHECK(f.run(second).status == "sleeping");
    CHECK(f.run(other).status == "sleeping");
    f.clock.advance(10000);
    f.idle();
    for (const auto& id : {first, second, other}) CHECK(f.run(id).status == "completed");
    CHECK(f.count("SELECT COALESCE(SUM(n), 0) FROM flow_state") == 0);
}

TEST_CASE("concurrency: at most `limit` execute at once per key, across worker threads") {
    Fixture f;
    std::mutex mu;
    std::condition_variable cv;
    bool open = false;
    std::map<std::string, int> now_running, most;
    int entered = 0;
    f.engine.add(workflow("c").on_event("go").concurrency(2, "event.data.k").run([&](Context& ctx) {
        const std::string k = ctx.event()["data"]["k"];
        return ctx.step("work", [&] {
            std::unique_lock lock(mu);
            ++entered;
            most[k] = std::max(most[k], ++now_running[k]);
            cv.notify_all();
            cv.wait(lock, [&] { return open; });
            --now_running[k];
            return 1;
        });
    }));
    std::vector<std::string> ids;
    for (int i = 0; i < 5; ++i) ids.push_back(f.start("go", {{"k", "a"}}));
    ids.push_back(f.start("go", {{"k", "b"}}));
    WorkerOptions opts;
    opts.threads = 6;
    opts.poll = 50ms;
    f.engine.start(opts);
    {
        std::unique_lock lock(mu);
        CHECK(cv.wait_for(lock, 10s, [&] { return entered == 3; }));
    }
    std::this_thread::sleep_for(300ms);  // room for a wrong fourth start
    {
        std::lock_guard lock(mu);
        CHECK(entered == 3);
    }
    int parked = 0;
    for (const auto& id : ids) {
        if (f.run(id).status != "queued") continue;
        CHECK(held_message(f, id) == "queued: concurrency 2/2 for k=a");
        ++parked;
    }
    CHECK(parked == 3);
    {
        std::lock_guard lock(mu);
        open = true;
    }
    cv.notify_all();
    for (int i = 0; i < 200; ++i) {
        if (f.count("SELECT COUNT(*) FROM runs WHERE status = 'completed'") == 6) break;
        std::this_thread::sleep_for(50ms);
    }
    f.engine.stop();
    CHECK(f.count("SELECT COUNT(*) FROM runs WHERE status = 'completed'") == 6);
    CHECK(most["a"] == 2);
    CHECK(most["b"] == 1);
}

TEST_CASE("throttle: starts spread one per period/limit per key; a burst after quiet") {
    Fixture f;
    f.engine.add(
        workflow("t").on_event("go").throttle({2, 10s, 1, "event.data.k"}).run([](Context&) {
            return 1;
        }));
    std::vector<std::string> a;
    for (int i = 0; i < 4; ++i) a.push_back(f.start("go", {{"k", "a"}}));
    const std::string b = f.start("go", {{"k", "b"}});
    f.idle();
    CHECK(started_at(f, a[0]) == kT0);
    CHECK(started_at(f, b) == kT0);  // its own key
    CHECK(f.run(a[1]).status == "queued");
    CHECK(held_message(f, a[1]).starts_with("throttled until "));
    CHECK(f.engine.held_back(f.run(a[1]))["until"] == kT0 + 5000);
    f.clock.advance(4999);
    f.idle();
    CHECK(f.run(a[1]).status == "queued");  // the period's edge
    f.clock.advance(1);
    f.idle();
    CHECK(started_at(f, a[1]) == kT0 + 5000);
    f.clock.advance(5000);
    f.idle();
    f.clock.advance(5000);
    f.idle();
    CHECK(started_at(f, a[2]) == kT0 + 10000);
    CHECK(started_at(f, a[3]) == kT0 + 15000);

    // Burst 3: three start at once, then one per interval.
    f.engine.add(workflow("burst").on_event("burst").throttle({1, 10s, 3, ""}).run([](Context&) {
        return 1;
    }));
    std::vector<std::string> c;
    for (int i = 0; i < 4; ++i) c.push_back(f.start("burst"));
    f.idle();
    int started = 0;
    for (const auto& id : c) started += f.run(id).status == "completed";
    CHECK(started == 3);
    f.clock.advance(10000);
    f.idle();
    CHECK(f.run(c[3]).status == "completed");
}

TEST_CASE("rate limit: events beyond the limit in a period start nothing, and say so") {
    Fixture f;
    f.engine.add(
        workflow("r").on_event("go").rate_limit({2, 10s, "event.data.k"}).run([](Context&) {
            return 1;
        }));
    auto send = [&](const std::string& k) { return f.engine.send(EventInput{"go", {{"k", k}}}); };
    CHECK(send("a").run_ids.size() == 1);
    f.clock.advance(1000);
    CHECK(send("a").run_ids.size() == 1);
    const auto limited = send("a");
    CHECK(limited.run_ids.empty());
    CHECK(send("b").run_ids.size() == 1);  // another key
    const json skipped = f.engine.skipped_starts(limited.event_id);
    REQUIRE(skipped.size() == 1);
    CHECK(skipped[0]["workflow_id"] == "r");
    CHECK(skipped[0]["reason"] == "rate limited");
    f.clock.advance(8999);  // T0 + 9.999 s: both starts still within the period
    CHECK(send("a").run_ids.empty());
    f.clock.advance(1);  // the first start has left the period
    CHECK(send("a").run_ids.size() == 1);
    CHECK(send("a").run_ids.empty());
}

TEST_CASE("debounce: one run with the last event, `period` after it, capped by the timeout") {
    Fixture f;
    f.engine.add(
        workflow("d").on_event("go").debounce({5s, "event.data.k", 12s}).run([](Context& ctx) {
            return ctx.event()["data"]["n"];
        }));
    const auto first = f.engine.send(EventInput{"go", {{"k", "a"}, {"n", 1}}});
    f.clock.advance(3000);
    const auto second = f.engine.send(EventInput{"go", {{"k", "a"}, {"n", 2}}});
    CHECK(second.run_ids == first.run_ids);
    const std::string id = first.run_ids.at(0);
    CHECK(held_message(f, id).starts_with("debounced until "));
    f.clock.advance(4999);  // T0 + 7.999 s: the timer restarted at T0 + 3 s
    f.idle();
    CHECK(f.run(id).status == "queued");
    f.clock.advance(1);
    f.idle();
    CHECK(f.run(id).status == "completed");
    CHECK(f.run(id).output == "2");
    CHECK(f.run(id).event_id == second.event_id);

    // A stream of events 4, 4 and 3 s apart: the timeout starts it 12 s after the first.
    const auto s0 = f.engine.send(EventInput{"go", {{"k", "b"}, {"n", 10}}});
    const std::int64_t t0 = f.clock.now_ms();
    for (const auto& [n, gap] : {std::pair{11, 4000}, {12, 4000}, {13, 3000}}) {
        f.clock.advance(gap);
        f.idle();
        CHECK(f.engine.send(EventInput{"go", {{"k", "b"}, {"n", n}}}).run_ids == s0.run_ids);
    }
    f.clock.advance(999);
    f.idle();
    CHECK(f.run(s0.run_ids[0]).status == "queued");
    f.clock.advance(1);
    f.idle();
    CHECK(f.run(s0.run_ids[0]).status == "completed");
    CHECK(started_at(f, s0.run_ids[0]) == t0 + 12000);
    CHECK(f.run(s0.run_ids[0]).output == "13");
    // Admitted: the next event starts a new one.
    CHECK(f.engine.send(EventInput{"go", {{"k", "b"}, {"n", 14}}}).run_ids != s0.run_ids);
}

TEST_CASE("batching: a run gets up to max_size events, when full or at the timeout") {
    Fixture f;
    f.engine.add(workflow("b").on_event("go").batch({3, 5s, ""}).run([](Context& ctx) {
        json ns = json::array();
        for (const auto& e : ctx.events()) ns.push_back(e["data"]["n"]);
        return ns;
    }));
    std::vector<std::string> runs;
    for (int n = 0; n < 5; ++n)
        runs.push_back(f.engine.send(EventInput{"go", {{"n", n}}}).run_ids.at(0));
    CHECK(runs[0] == runs[2]);
    CHECK(runs[3] == runs[4]);
    CHECK(runs[3] != runs[0]);
    f.idle();
    CHECK(f.run(runs[0]).output == "[0,1,2]");  // full: at once
    CHECK(f.run(runs[3]).status == "queued");
    CHECK(held_message(f, runs[3]) == "in batch (2/3)");
    f.clock.advance(5000);
    f.idle();
    CHECK(f.run(runs[3]).output == "[3,4]");
}

TEST_CASE("priority: a run is claimed as if due its priority in seconds earlier") {
    Fixture f;
    std::vector<int> order;
    std::mutex mu;
    f.engine.add(workflow("p").on_event("go").priority("event.data.p").run([&](Context& ctx) {
        std::lock_guard lock(mu);
        order.push_back(ctx.event()["data"]["n"].get<int>());
        return 1;
    }));
    f.engine.send(EventInput{"go", {{"n", 1}, {"p", 0}}});
    f.clock.advance(200000);
    f.engine.send(EventInput{"go", {{"n", 2}, {"p", 0}}});
    f.engine.send(EventInput{"go", {{"n", 3}, {"p", 100}}});    // before 2, not before 1
    f.engine.send(EventInput{"go", {{"n", 4}, {"p", -30}}});    // not before 30 s from now
    f.engine.send(EventInput{"go", {{"n", 5}, {"p", 99999}}});  // clamped to 12 h: first
    // One thread: one claim at a time, in claim order.
    WorkerOptions opts;
    opts.threads = 1;
    opts.poll = 20ms;
    f.engine.start(opts);
    const auto done = [&](std::size_t n) {
        for (int i = 0; i < 250; ++i) {
            {
                std::lock_guard lock(mu);
                if (order.size() >= n) return true;
            }
            std::this_thread::sleep_for(20ms);
        }
        return false;
    };
    CHECK(done(4));
    std::this_thread::sleep_for(100ms);
    {
        std::lock_guard lock(mu);
        INFO(json(order).dump());
        CHECK(order == std::vector<int>{5, 1, 3, 2});
    }
    f.clock.advance(30000);
    CHECK(done(5));
    f.engine.stop();
    CHECK(order.back() == 4);
}

TEST_CASE("singleton: skip starts nothing while one runs; cancel replaces it") {
    Fixture f;
    f.engine.add(workflow("s")
                     .on_event("go")
                     .singleton({"event.data.k", Singleton::Mode::skip})
                     .run([](Context& ctx) {
                         ctx.sleep("nap", 5s);
                         return 1;
                     }));
    const auto a = f.engine.send(EventInput{"go", {{"k", "x"}}});
    f.idle();
    const auto skipped = f.engine.send(EventInput{"go", {{"k", "x"}}});
    CHECK(skipped.run_ids.empty());
    CHECK(f.engine.skipped_starts(skipped.event_id)[0]["reason"] == "singleton");
    CHECK(f.engine.send(EventInput{"go", {{"k", "y"}}}).run_ids.size() == 1);
    f.clock.advance(5000);
    f.idle();
    CHECK(f.run(a.run_ids[0]).status == "completed");
    CHECK(f.engine.send(EventInput{"go", {{"k", "x"}}}).run_ids.size() == 1);

    f.engine.add(workflow("s2")
                     .on_event("go2")
                     .singleton({"", Singleton::Mode::cancel})
                     .run([](Context& ctx) {
                         ctx.sleep("nap", 5s);
                         return 1;
                     }));
    const std::string old = f.engine.send(EventInput{"go2", {}}).run_ids.at(0);
    f.idle();
    const std::string fresh = f.engine.send(EventInput{"go2", {}}).run_ids.at(0);
    CHECK(f.run(old).status == "cancelled");
    f.idle();
    f.clock.advance(5000);
    f.idle();
    CHECK(f.run(fresh).status == "completed");
}

TEST_CASE("idempotency: one run per key value per window") {
    Fixture f;
    f.engine.add(workflow("i").on_event("go").idempotency("event.data.order", 1h).run([](Context&) {
        return 1;
    }));
    CHECK(f.engine.send(EventInput{"go", {{"order", 7}}}).run_ids.size() == 1);
    const auto again = f.engine.send(EventInput{"go", {{"order", 7}}});
    CHECK(again.run_ids.empty());
    CHECK(f.engine.skipped_starts(again.event_id)[0]["reason"] == "idempotency");
    CHECK(f.engine.send(EventInput{"go", {{"order", 8}}}).run_ids.size() == 1);
    f.clock.advance(3600000);
    CHECK(f.engine.send(EventInput{"go", {{"order", 7}}}).run_ids.size() == 1);
}

TEST_CASE("flow: a cancelled parked run gives its turn to the next") {
    Fixture f;
    f.engine.add(workflow("c").on_event("go").concurrency(1).run([](Context& ctx) {
        ctx.step("a", [] { return 1; });
        ctx.sleep("nap", 10s);
        return ctx.step("b", [] { return 1; });
    }));
    const std::string a = f.start("go");
    // a executes its first step... only once idle() runs; park b and c behind it first.
    f.engine.run_until_idle(0);
    const std::string b = f.start("go"), c = f.start("go");
    f.idle();  // a, then b, then c each ran to their sleep (a slept: its slot freed)
    CHECK(f.run(c).status == "sleeping");
    const std::string d = f.start("go"), e = f.start("go");
    CHECK(f.engine.cancel(d));
    f.idle();
    CHECK(f.run(e).status == "sleeping");
    f.clock.advance(10000);
    f.idle();
    for (const auto& id : {a, b, c, e}) CHECK(f.run(id).status == "completed");
    CHECK(f.count("SELECT COUNT(*) FROM queue WHERE admit_at IS NOT NULL") == 0);
}

}  // namespace cairn::engine_test

namespace cairn::engine_test {

// A reference model written here, apart from the engine: random events at random clock
// ticks, against a throttle (limit 2 a second, burst 2, per key) and a rate limit (2 a
// second per key). The throttle gives each event, in arrival order per key, the turn
// max(arrival, tat - tolerance) and moves tat one interval past it; its run starts at the
// first tick at or after its turn. The rate limit starts a run for an event when fewer
// than two runs started for its key in the second before it.
TEST_CASE("flow: random events and ticks start runs when a reference model says") {
    for (unsigned seed : {1u, 2u, 3u}) {
        CAPTURE(seed);
        Fixture f;
        f.engine.add(workflow("throttled")
                         .on_event("m")
                         .throttle({2, 1000ms, 2, "event.data.k"})
                         .run([](Context&) { return 1; }));
        f.engine.add(workflow("limited")
                         .on_event("m")
                         .rate_limit({2, 1000ms, "event.data.k"})
                         .run([](Context&) { return 1; }));
        std::mt19937 rng(seed);
        constexpr std::int64_t kInterval = 500, kTolerance = 500;
        std::map<std::string, std::int64_t> tat;                   // model: throttle per key
        std::map<std::string, std::vector<std::int64_t>> allowed;  // model: rate-limit starts
        struct Expect {
            std::string throttled_run, limited_run;
            std::int64_t turn;
            bool rate_ok;
        };
        std::vector<Expect> expect;
        std::vector<std::int64_t> ticks;
        for (int step = 0; step < 60; ++step) {
            f.clock.advance(static_cast<std::int64_t>(rng() % 700));
            const std::int64_t now = f.clock.now_ms();
            const int events = static_cast<int>(rng() % 4);
            for (int i = 0; i < events; ++i) {
                const std::string k = std::string(1, static_cast<char>('a' + rng() % 3));
                const auto sent = f.engine.send(EventInput{"m", {{"k", k}}});
                Expect e;
                const std::int64_t t = tat.contains(k) ? tat[k] : now;
                e.turn = std::max(now, t - kTolerance);
                tat[k] = std::max(t, e.turn) + kInterval;
                auto& recent = allowed[k];
                std::erase_if(recent, [&](std::int64_t s) { return s <= now - 1000; });
                e.rate_ok = recent.size() < 2;
                if (e.rate_ok) recent.push_back(now);
                for (const auto& id : sent.run_ids) {
                    (f.run(id).workflow_id == "throttled" ? e.throttled_run : e.limited_run) = id;
                }
                expect.push_back(e);
            }
            ticks.push_back(now);
            f.idle();
        }
        for (int i = 0; i < 40; ++i) {  // let every throttled run come due
            f.clock.advance(250);
            ticks.push_back(f.clock.now_ms());
            f.idle();
        }
        for (const Expect& e : expect) {
            REQUIRE(!e.throttled_run.empty());
            const auto tick = std::lower_bound(ticks.begin(), ticks.end(), e.turn);
            REQUIRE(tick != ticks.end());
            CHECK(started_at(f, e.throttled_run) == *tick);
            CHECK(e.limited_run.empty() != e.rate_ok);
        }
    }
}

}  // namespace cairn::engine_test

namespace cairn::engine_test {

TEST_CASE(
    "flow: a run under flow control listens for cancel_on, and its own event does not "
    "cancel it") {
    Fixture f;
    f.engine.add(workflow("c")
                     .on_event("order/placed")
                     .concurrency(1)
                     .cancel_on("order/placed", "data.id")
                     .run([](Context& ctx) {
                         ctx.sleep("nap", 10s);
                         return 1;
                     }));
    const std::string first = f.start("order/placed", {{"id", 1}});
    f.idle();
    CHECK(f.run(first).status == "sleeping");
    const std::string second = f.start("order/placed", {{"id", 1}});  // cancels the first
    CHECK(f.run(first).status == "cancelled");
    f.idle();
    CHECK(f.run(second).status == "sleeping");
}

}  // namespace cairn::engine_test
