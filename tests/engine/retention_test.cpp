// Retention: ended runs past their age go with everything recorded for them and the
// events no run needs; nothing else is touched, also while workers drain runs.

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <array>
#include <atomic>
#include <string>
#include <thread>

#include "engine/fixture.hpp"

namespace cairn::engine_test {
namespace {

const std::array<std::string, 3> kEnded{"completed", "failed", "cancelled"};
constexpr std::int64_t kDay = 86'400'000;

}  // namespace

TEST_CASE("collect deletes old ended runs with their records and unneeded events, only them") {
    Fixture f;
    f.engine.add(workflow("ok").on_event("ok").run([](Context& ctx) {
        ctx.step("a", [] { return 1; });
        return 1;
    }));
    f.engine.add(workflow("bad").on_event("bad").retry_policy(exact(2, 1ms)).run([](Context& ctx) {
        return ctx.step("a", []() -> json { throw std::runtime_error("no"); });
    }));
    f.engine.add(workflow("napper").on_event("nap").run([](Context& ctx) {
        ctx.sleep("long", std::chrono::hours(24 * 1000));
        return 1;
    }));
    const auto old_ok = f.start("ok");
    const auto old_bad = f.start("bad");
    const auto napping = f.start("nap");
    f.engine.send(EventInput{"nobody/listens"});
    f.idle();
    f.clock.advance(1);
    f.idle();
    CHECK(f.run(old_bad).status == "failed");
    CHECK(f.count("SELECT COUNT(*) FROM step_attempts") > 0);

    // Far enough that the ids made so far by this test process (they never go back, and
    // other tests moved their clocks ahead) are all older than the cutoff.
    f.clock.advance(400 * kDay);
    const auto recent = f.start("ok");
    f.idle();
    const std::int64_t cutoff = f.clock.now_ms() - 30 * kDay;
    const std::array<std::string, 1> failed_only{"failed"};
    CHECK(f.engine.store().count_collectable(cutoff, kEnded) == 2);
    CHECK(f.engine.store().count_collectable(cutoff, failed_only) == 1);
    CHECK_THROWS_AS(
        f.engine.store().count_collectable(cutoff, std::array<std::string, 1>{"running"}),
        std::invalid_argument);

    std::int64_t batches = 0;
    const auto done = f.engine.collect(cutoff, kEnded, [&](const auto&) { ++batches; });
    CHECK(done.runs == 2);
    CHECK(done.events == 3);  // the two runs' events and the one that started nothing
    CHECK(batches >= 1);
    CHECK_FALSE(f.engine.store().get_run(old_ok));
    CHECK_FALSE(f.engine.store().get_run(old_bad));
    CHECK(f.run(napping).status == "sleeping");  // not ended: kept, however old
    CHECK(f.run(recent).status == "completed");  // too young
    for (const char* table : {"steps", "step_attempts", "queue", "waits"}) {
        CAPTURE(table);
        CHECK(f.count(fmt::format(
                  "SELECT COUNT(*) FROM {} WHERE run_id NOT IN (SELECT id FROM runs)", table)) ==
              0);
    }
    CHECK(f.count("SELECT COUNT(*) FROM events") == 2);  // the napper's and the recent run's
    CHECK(f.count("SELECT COUNT(*) FROM steps") == 2);
    CHECK(f.engine.collect(cutoff, kEnded).runs == 0);  // nothing left to do
}

TEST_CASE("collecting while workers drain runs touches no unfinished run and loses nothing kept") {
    Fixture f;
    f.engine.add(workflow("three").on_event("go").run([](Context& ctx) {
        for (const char* s : {"a", "b", "c"}) ctx.step(s, [] { return 1; });
        return 3;
    }));
    constexpr int kRuns = 200;
    for (int i = 0; i < kRuns; ++i) f.start("go");
    WorkerOptions o;
    o.threads = 4;
    o.retention = std::chrono::milliseconds(0);
    f.engine.start(o);
    std::int64_t deleted = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    // Every run that has ended is old enough: a cutoff far past the workers' clock (and
    // past the ids this process made, which never go back).
    while (std::chrono::steady_clock::now() < deadline) {
        deleted += f.engine.collect(f.clock.now_ms() + 10'000 * kDay, kEnded).runs;
        if (deleted == kRuns) break;
    }
    f.engine.stop();
    CHECK(deleted == kRuns);
    CHECK(f.count("SELECT COUNT(*) FROM runs") == 0);
    CHECK(f.count("SELECT COUNT(*) FROM steps") == 0);
    CHECK(f.count("SELECT COUNT(*) FROM queue") == 0);
    CHECK(f.engine.stats().runs_ended == kRuns);  // every run ran to its end first
}

}  // namespace cairn::engine_test
