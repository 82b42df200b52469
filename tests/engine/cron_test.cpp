// Cron workflows: one run per tick however many engines fire it, the latest missed tick
// once after downtime, paused schedules, and registration errors.

#include <doctest/doctest.h>

#include <memory>
#include <vector>

#include "common/time.hpp"
#include "engine/fixture.hpp"

namespace cairn::engine_test {

namespace {

constexpr std::int64_t kMinute = 60'000;

Workflow every_five_minutes() {
    return workflow("five").cron("*/5 * * * *").run([](Context& ctx) {
        return ctx.event()["data"]["tick_ms"];
    });
}

// The next multiple of five minutes after `t`.
std::int64_t next_five(std::int64_t t) {
    return (t / (5 * kMinute) + 1) * 5 * kMinute;
}

}  // namespace

TEST_CASE("a cron workflow starts one run per tick, on the tick's event") {
    Fixture f;
    f.engine.add(every_five_minutes());
    CHECK(f.engine.fire_schedules() == 0);  // a new schedule: nothing before now is missed
    const std::int64_t tick = next_five(f.clock.now_ms());
    f.clock.set(tick - 1);
    CHECK(f.engine.fire_schedules() == 0);
    f.clock.set(tick);
    CHECK(f.engine.fire_schedules() == 1);
    CHECK(f.engine.fire_schedules() == 0);  // the same tick again starts nothing
    f.idle();
    storage::RunFilter filter;
    filter.workflow_id = "five";
    auto runs = f.engine.store().list_runs(filter, std::nullopt, 10).runs;
    REQUIRE(runs.size() == 1);
    CHECK(runs[0].status == "completed");
    CHECK(runs[0].output == std::to_string(tick));
    CHECK(runs[0].event_name == "cairn/cron");
    const auto event = f.engine.store().get_event(runs[0].event_id);
    CHECK(event->ts == tick);
    CHECK(json::parse(event->data)["tick"] == format_rfc3339(tick));

    const json listing = f.engine.workflow_listing();
    CHECK(listing[0]["cron"] == "*/5 * * * *");
    CHECK(listing[0]["next_tick"] == tick + 5 * kMinute);
}

TEST_CASE("after downtime the latest missed tick runs once, and a restart remembers it") {
    TestDb t;
    storage::Migrator(t.db(), {storage::run_store_component()}).apply();
    ManualClock clock{kT0};
    std::int64_t latest = 0;
    {
        Engine e(t.db(), clock);
        e.add(every_five_minutes());
        CHECK(e.fire_schedules() == 0);
        clock.set(next_five(clock.now_ms()));
        CHECK(e.fire_schedules() == 1);
    }
    // Down for an hour and a bit: twelve ticks were missed.
    clock.advance(63 * kMinute);
    latest = clock.now_ms() / (5 * kMinute) * 5 * kMinute;
    Engine e(t.db(), clock);
    e.add(every_five_minutes());
    CHECK(e.fire_schedules() == 1);
    CHECK(e.fire_schedules() == 0);
    e.run_until_idle();
    storage::RunFilter filter;
    filter.workflow_id = "five";
    const auto runs = e.store().list_runs(filter, std::nullopt, 10).runs;
    REQUIRE(runs.size() == 2);
    CHECK(runs[0].output == std::to_string(latest));  // newest first

    // A changed expression is a new schedule: its ticks before now are not missed.
    Engine changed(t.db(), clock);
    changed.add(workflow("five").cron("*/10 * * * *").run([](Context&) { return 1; }));
    clock.advance(4 * kMinute);
    CHECK(changed.fire_schedules() == 0);
}

TEST_CASE("three engines on one database start one run per tick between them") {
    Fixture f;
    std::vector<std::unique_ptr<Engine>> engines;
    for (int i = 0; i < 3; ++i) {
        engines.push_back(std::make_unique<Engine>(f.t.db(), f.clock));
        engines.back()->add(every_five_minutes());
        CHECK(engines.back()->fire_schedules() == 0);
    }
    for (int tick = 0; tick < 3; ++tick) {
        f.clock.set(next_five(f.clock.now_ms()));
        int started = 0;
        for (auto& e : engines) started += e->fire_schedules();
        CHECK(started == 1);
    }
    CHECK(f.count("SELECT COUNT(*) FROM runs WHERE workflow_id = 'five'") == 3);
}

TEST_CASE("a paused cron workflow's ticks queue their runs; a bad expression is refused") {
    Fixture f;
    f.engine.add(every_five_minutes());
    f.engine.fire_schedules();
    f.engine.pause("five");
    f.clock.set(next_five(f.clock.now_ms()));
    CHECK(f.engine.fire_schedules() == 1);
    f.idle();
    CHECK(f.count("SELECT COUNT(*) FROM runs WHERE workflow_id = 'five' AND status = 'queued'") ==
          1);
    f.engine.resume("five");
    f.idle();
    CHECK(f.count("SELECT COUNT(*) FROM runs WHERE workflow_id = 'five' AND status = "
                  "'completed'") == 1);

    try {
        f.engine.add(workflow("bad").cron("0 25 * * *").run([](Context&) { return 1; }));
        FAIL("a bad cron expression was accepted");
    } catch (const std::invalid_argument& e) {
        CHECK(std::string(e.what()) ==
              "workflow 'bad': cron expression '0 25 * * *': hour 25 is outside 0-23");
    }
}

}  // namespace cairn::engine_test
