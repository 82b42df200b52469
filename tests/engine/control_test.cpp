// Run control by workflow and by filter: pause and resume, bulk cancel/retry/replay, and
// replay with edited data.

#include <doctest/doctest.h>

#include <algorithm>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/fixture.hpp"

namespace cairn::engine_test {

TEST_CASE("a paused workflow's runs queue up and start in order once resumed; others run") {
    Fixture f;
    std::mutex mu;
    std::vector<int> order;
    f.engine.add(workflow("held").on_event("held").run([&](Context& ctx) {
        const int n = ctx.event()["data"]["n"].get<int>();
        ctx.sleep("nap", 1000ms);
        ctx.step("record", [&] {
            std::lock_guard lock(mu);
            order.push_back(n);
            return n;
        });
        return n;
    }));
    f.engine.add(workflow("free").on_event("free").run([](Context&) { return 1; }));
    const auto sleeper = f.start("held", {{"n", 0}});
    f.idle();
    CHECK(f.run(sleeper).status == "sleeping");

    CHECK(f.engine.pause("held"));
    CHECK_FALSE(f.engine.pause("held"));
    CHECK(f.engine.store().paused_workflows().contains("held"));
    std::vector<std::string> queued;
    for (int n = 1; n <= 3; ++n) {
        queued.push_back(f.start("held", {{"n", n}}));
        f.clock.advance(1);
    }
    const auto other = f.start("free");
    f.clock.advance(2000);  // the sleeper is due, but paused
    f.idle();
    CHECK(f.run(other).status == "completed");
    CHECK(f.run(sleeper).status == "sleeping");
    for (const auto& id : queued) CHECK(f.run(id).status == "queued");
    const json listing = f.engine.workflow_listing();  // by id: free, held
    CHECK(listing[0]["paused"] == false);
    CHECK(listing[1]["paused"] == true);

    CHECK(f.engine.resume("held"));
    CHECK_FALSE(f.engine.resume("held"));
    f.idle();  // the sleeper records; the new ones start and sleep
    f.clock.advance(2000);
    f.idle();
    for (const auto& id : queued) CHECK(f.run(id).status == "completed");
    CHECK(f.run(sleeper).status == "completed");
    CHECK(order == std::vector<int>{0, 1, 2, 3});
}

namespace {

// `run` stays queued while paused; once `by` resumes its workflow, `worker` completes it.
void queued_until_resumed(Engine& worker, Engine& by, const std::string& run) {
    CHECK(worker.store().get_run(run)->status == "queued");
    const auto ended = worker.stats().runs_ended;
    by.resume("held");
    worker.await_runs_ended(ended, 10s);
    worker.stop();
    CHECK(worker.store().get_run(run)->status == "completed");
}

}  // namespace

TEST_CASE("a send while workers idle does not hand a paused workflow's run to them") {
    TestDb t;
    storage::Migrator(t.db(), {storage::run_store_component()}).apply();
    engine::SystemClock clock;
    Engine e(t.db(), clock);
    e.add(workflow("held").on_event("held").run([](Context&) { return 1; }));
    e.start({.threads = 2, .lease = 30s, .poll = 20ms});
    e.pause("held");
    const auto sent = e.send(EventInput{"held"});
    REQUIRE(sent.run_ids.size() == 1);
    std::this_thread::sleep_for(300ms);
    queued_until_resumed(e, e, sent.run_ids[0]);
}

TEST_CASE("a pause or resume by another process takes effect within a second") {
    TestDb t;
    storage::Migrator(t.db(), {storage::run_store_component()}).apply();
    engine::SystemClock clock;
    Engine worker(t.db(), clock);
    Engine other(t.db(), clock);  // not started: it only sends and operates
    for (Engine* e : {&worker, &other})
        e->add(workflow("held").on_event("held").run([](Context&) { return 1; }));
    worker.start({.threads = 2, .lease = 30s, .poll = 20ms});
    other.pause("held");
    std::this_thread::sleep_for(1500ms);
    const auto sent = other.send(EventInput{"held"});
    std::this_thread::sleep_for(500ms);
    queued_until_resumed(worker, other, sent.run_ids[0]);
}

TEST_CASE("bulk operations act on the runs matching a filter when it was read, with progress") {
    Fixture f;
    f.engine.add(workflow("many").on_event("many").run(
        [](Context& ctx) { return ctx.step("a", [] { return 1; }); }));
    f.engine.add(workflow("bystander").on_event("by").run([](Context&) { return 1; }));
    f.engine.pause("many");
    constexpr int kRuns = 1001;
    std::vector<EventInput> events(kRuns, EventInput{"many"});
    f.t.db().transact([&](storage::Transaction& tx) { f.engine.send(tx, events); });
    const auto bystander = f.start("by");

    storage::RunFilter filter;
    filter.workflow_id = "many";
    CHECK(f.engine.store().count_runs(filter) == kRuns);
    std::vector<std::int64_t> progress;
    auto cancelled = f.engine.bulk(Engine::BulkOperation::cancel, filter,
                                   [&](std::int64_t handled, std::int64_t matched) {
                                       CHECK(matched == kRuns);
                                       progress.push_back(handled);
                                   });
    CHECK(cancelled.matched == kRuns);
    CHECK(cancelled.done.size() == kRuns);
    CHECK(progress == std::vector<std::int64_t>{500, 1000});
    CHECK(f.run(bystander).status == "queued");
    // Cancelling again passes over every run: they have ended.
    CHECK(f.engine.bulk(Engine::BulkOperation::cancel, filter).done.empty());

    filter.status = "cancelled";
    const auto retried = f.engine.bulk(Engine::BulkOperation::retry, filter);
    CHECK(retried.done.size() == kRuns);
    f.engine.resume("many");
    f.idle();
    filter.status = "completed";
    CHECK(f.engine.store().count_runs(filter) == kRuns);

    // Replays are runs of the workflow too, but are not replayed again.
    filter.status.reset();
    const auto replayed = f.engine.bulk(Engine::BulkOperation::replay, filter);
    CHECK(replayed.matched == kRuns);
    CHECK(replayed.done.size() == kRuns);
    CHECK(f.engine.store().count_runs(filter) == 2 * kRuns);
}

TEST_CASE("a replay with edited data runs on a new event of the same name") {
    Fixture f;
    f.engine.add(workflow("greet").on_event("greet").run([](Context& ctx) {
        return ctx.step("hi",
                        [&] { return "hi " + ctx.event()["data"]["name"].get<std::string>(); });
    }));
    f.engine.add(workflow("listener").on_event("greet").run([](Context&) { return 1; }));
    const auto r = f.engine.send(EventInput{"greet", {{"name", "ada"}}});
    f.idle();
    std::string greet;
    for (const auto& id : r.run_ids) {
        if (f.run(id).workflow_id == "greet") greet = id;
    }
    REQUIRE_FALSE(greet.empty());
    const std::int64_t runs_before = f.count("SELECT COUNT(*) FROM runs");
    auto replay = f.engine.replay(greet, std::nullopt, json{{"name", "bob"}});
    REQUIRE(std::holds_alternative<std::string>(replay));
    f.idle();
    const auto id = std::get<std::string>(replay);
    CHECK(f.run(id).status == "completed");
    CHECK(f.run(id).output == "\"hi bob\"");
    CHECK(f.run(id).event_name == "greet");
    CHECK(f.run(id).event_id != r.event_id);
    CHECK(f.count("SELECT COUNT(*) FROM runs") == runs_before + 1);  // the listener did not run
    CHECK(f.engine.store().get_event(r.event_id)->data == R"({"name":"ada"})");
}

}  // namespace cairn::engine_test

namespace cairn::engine_test {

namespace {

// Waits an hour between two steps; cancelled by order/cancelled of its order within a day.
Workflow cancellable(std::vector<std::string>* done) {
    return workflow("fulfil")
        .on_event("order/placed")
        .cancel_on("order/cancelled", "data.order", std::chrono::hours(24))
        .run([done](Context& ctx) {
            ctx.step("pick", [&] {
                done->push_back("pick");
                return 1;
            });
            ctx.sleep("wait", std::chrono::hours(1));
            ctx.step("ship", [&] {
                done->push_back("ship");
                return 1;
            });
            return 1;
        });
}

}  // namespace

TEST_CASE("cancel_on: a matching event cancels a sleeping run at once, others do not") {
    Fixture f;
    std::vector<std::string> done;
    f.engine.add(cancellable(&done));
    const auto one = f.start("order/placed", {{"order", 1}});
    const auto two = f.start("order/placed", {{"order", 2}});
    f.idle();
    CHECK(f.run(one).status == "sleeping");
    f.engine.send(EventInput{"order/cancelled", {{"order", 3}}});  // another order
    f.engine.send(EventInput{"order/updated", {{"order", 1}}});    // another name
    CHECK(f.run(one).status == "sleeping");
    const auto sent = f.engine.send(EventInput{"order/cancelled", {{"order", 1}}});
    const auto r = f.run(one);
    CHECK(r.status == "cancelled");
    REQUIRE(r.error);
    CHECK(json::parse(*r.error)["event_id"] == sent.event_id);
    CHECK(f.run(two).status == "sleeping");
    f.clock.advance(3'600'000);
    f.idle();
    CHECK(f.run(two).status == "completed");
    CHECK(done == std::vector<std::string>{"pick", "pick", "ship"});
    CHECK(f.count("SELECT COUNT(*) FROM waits") == 0);  // the listeners went with the runs
}

TEST_CASE("cancel_on: no longer after its timeout; a running run stops at its next boundary") {
    Fixture f;
    std::vector<std::string> done;
    f.engine.add(cancellable(&done));
    const auto late = f.start("order/placed", {{"order", 1}});
    f.idle();
    f.clock.advance(25LL * 3'600'000);  // past the day the cancellation listens for
    f.engine.send(EventInput{"order/cancelled", {{"order", 1}}});
    CHECK(f.run(late).status != "cancelled");
    f.idle();
    CHECK(f.run(late).status == "completed");

    // The run cancels itself from a step: the step ends, the next does not start.
    f.engine.add(
        workflow("self")
            .on_event("self/start")
            .cancel_on("self/stop", "data.id")
            .run([&](Context& ctx) {
                ctx.send_event("stop", {{"name", "self/stop"}, {"data", ctx.event()["data"]}});
                ctx.step("after", [&] {
                    done.push_back("after");
                    return 1;
                });
                return 1;
            }));
    const auto self = f.start("self/start", {{"id", "x"}});
    f.idle();
    CHECK(f.run(self).status == "cancelled");
    CHECK(std::count(done.begin(), done.end(), "after") == 0);
}

TEST_CASE("cancel_on: an event that starts runs does not cancel its own runs") {
    Fixture f;
    f.engine.add(workflow("latest")
                     .on_event("doc/saved")
                     .cancel_on("doc/saved", "data.doc")
                     .run([](Context& ctx) {
                         ctx.sleep("settle", 60s);
                         return 1;
                     }));
    const auto first = f.start("doc/saved", {{"doc", 7}});
    f.idle();
    const auto second = f.start("doc/saved", {{"doc", 7}});
    CHECK(f.run(first).status == "cancelled");
    CHECK(f.run(second).status == "queued");
    f.idle();
    f.clock.advance(61'000);
    f.idle();
    CHECK(f.run(second).status == "completed");
    CHECK_THROWS_AS(f.engine.add(workflow("bad").cancel_on("").run([](Context&) { return 1; })),
                    std::invalid_argument);
    CHECK_THROWS_AS(f.engine.add(workflow("bad").cancel_on("x", "data.id", 0ms).run([](Context&) {
        return 1;
    })),
                    std::invalid_argument);
}

}  // namespace cairn::engine_test
