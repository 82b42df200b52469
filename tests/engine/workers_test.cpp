// The engine's threads on SQLite and Postgres: the dispatcher, workers, leases, wake-ups
// across processes, and stopping.
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

#include "common/time.hpp"
#include "engine/database_clock.hpp"
#include "engine/fixture.hpp"

using namespace cairn;
using namespace cairn::engine_test;
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

TEST_CASE("the database clock follows Postgres's clock whatever the machine's says") {
    TestDb t;
    const std::int64_t real = cairn::now_ms();
    engine::ManualClock local(real + 3'600'000);  // an hour fast
    engine::DatabaseClock clock(t.db(), local);
    if (t.db().backend() == storage::Backend::postgres) {
        CHECK(std::llabs(clock.now_ms() - real) < 5'000);
        CHECK(std::llabs(clock.offset_ms() + 3'600'000) < 5'000);
        local.advance(1'000);  // it moves with the local clock between measurements
        CHECK(std::llabs(clock.now_ms() - real - 1'000) < 5'000);
    } else {  // one machine, one clock
        CHECK(clock.offset_ms() == 0);
        CHECK(clock.now_ms() == real + 3'600'000);
    }
}

TEST_CASE("processes with different workflows on one database each run only their own") {
    Fixture f;  // its engine knows "mine"
    f.engine.add(workflow("mine").on_event("shared/go").run([](Context&) { return "mine"; }));
    Engine other(f.t.db(), f.clock);
    other.add(workflow("theirs").on_event("shared/go").run([](Context&) { return "theirs"; }));
    Engine none(f.t.db(), f.clock);  // no workflows: claims nothing

    const auto mine = f.start("shared/go");
    const auto theirs = other.send(EventInput{"shared/go"}).run_ids.at(0);
    CHECK(none.run_until_idle() == 0);
    CHECK(f.idle() == 1);
    CHECK(f.run(mine).status == "completed");
    CHECK(f.run(theirs).status == "queued");  // not failed as unknown: its process runs it
    CHECK(other.run_until_idle() == 1);
    CHECK(f.run(theirs).status == "completed");
    CHECK(f.run(theirs).output == R"("theirs")");

    // A retry asked by anyone is executed by the workflow's own process.
    f.t.db().exec("UPDATE runs SET status = 'failed' WHERE id = $1", theirs);
    CHECK(f.engine.retry(theirs) == storage::RunStore::RetryResult::ok);
    CHECK(f.idle() == 0);
    CHECK(other.run_until_idle() == 1);
    CHECK(f.run(theirs).status == "completed");
    // So is a replay.
    const auto replayed = std::get<std::string>(f.engine.replay(theirs));
    CHECK(f.idle() == 0);
    CHECK(other.run_until_idle() == 1);
    CHECK(f.run(replayed).output == R"("theirs")");
    // And a cancel, before its process claims the run.
    const auto cancelled = other.send(EventInput{"shared/go"}).run_ids.at(0);
    f.idle();
    CHECK(f.engine.cancel(cancelled));
    CHECK(other.run_until_idle() == 0);
    CHECK(f.run(cancelled).status == "cancelled");
}

TEST_CASE("started engines list their workflows in the processes table") {
    Fixture f;
    f.engine.add(workflow("mine").on_event("a").run([](Context&) { return 1; }));
    Engine other(f.t.db(), f.clock);
    other.add(workflow("theirs").on_event("b").run([](Context&) { return 1; }));
    WorkerOptions o;
    o.threads = 1;
    o.process_name = "billing";
    other.start(o);

    auto listing = f.engine.workflow_listing();
    REQUIRE(listing.size() == 2);
    CHECK(listing[0]["id"] == "mine");
    CHECK(listing[0]["local"] == true);
    CHECK(listing[0]["processes"].empty());  // this engine has not started
    CHECK(listing[1]["id"] == "theirs");
    CHECK(listing[1]["local"] == false);
    CHECK(listing[1]["triggers"] == json::array({"b"}));
    CHECK(listing[1]["options"]["max_attempts"] == 4);
    REQUIRE(listing[1]["processes"].size() == 1);
    CHECK(listing[1]["processes"][0]["name"] == "billing");
    CHECK(listing[1]["processes"][0]["id"] == other.worker_id());
    CHECK(listing[1]["processes"][0]["live"] == true);

    other.stop();  // a clean stop keeps the row, marked
    listing = f.engine.workflow_listing();
    REQUIRE(listing.size() == 2);
    CHECK(listing[1]["processes"][0]["live"] == false);
    CHECK(listing[1]["processes"][0]["stopped_at"] == kT0);

    // Silent for a day: forgotten when a process next registers.
    f.clock.advance(25LL * 3600 * 1000);
    Engine third(f.t.db(), f.clock);
    third.add(workflow("third").run([](Context&) { return 1; }));
    third.start(o);
    listing = f.engine.workflow_listing();
    REQUIRE(listing.size() == 2);
    CHECK(listing[1]["id"] == "third");
    third.stop();
}
