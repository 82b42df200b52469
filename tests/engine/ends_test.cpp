// Workflow::on_end (every way a run ends is announced once, in the transaction that ends
// it), cancellation while a step executes (its result is not recorded), and cancel_on for
// every way a run starts; on the backend under test.

#include "cairn/context.hpp"
#include "engine/fixture.hpp"

namespace cairn::engine_test {

namespace {

// Announces each end as "run/ended" {run_id, status, output, error, trigger}; the "ends"
// workflow records them.
Workflow announced(WorkflowBuilder b, WorkflowFn fn) {
    Workflow w = b.run(std::move(fn));
    w.on_end = [](const RunEnded& end) {
        return std::vector<EventInput>{{"run/ended",
                                        {{"run_id", end.run_id},
                                         {"status", end.status},
                                         {"output", end.output},
                                         {"error", end.error},
                                         {"trigger", end.event.value("name", "")}}}};
    };
    return w;
}

void add_ends(Fixture& f) {
    f.engine.add(workflow("ends").on_event("run/ended").run([](Context& ctx) {
        return ctx.event()["data"];
    }));
}

// The ends recorded for `run`: the data of each "run/ended" event naming it.
std::vector<json> ends_of(Fixture& f, const std::string& run) {
    std::vector<json> out;
    for (const auto& r :
         f.engine.store().list_runs({.workflow_id = "ends"}, std::nullopt, 100).runs) {
        const json data = json::parse(f.engine.store().get_event(r.event_id)->data);
        if (data["run_id"] == run) out.push_back(data);
    }
    return out;
}

}  // namespace

TEST_CASE("on_end: completed, failed and cancelled runs are each announced once") {
    Fixture f;
    add_ends(f);
    f.engine.add(announced(workflow("job").on_event("job/go").cancel_on("job/stop", "data.id"),
                           [](Context& ctx) -> json {
                               const json& d = ctx.event()["data"];
                               if (d.value("fail", false)) throw NonRetriableError("job failed");
                               if (d.value("nap", false)) ctx.sleep("nap", 1h);
                               return d.value("id", 0) * 10;
                           }));
    const std::string done = f.start("job/go", {{"id", 1}});
    const std::string failed = f.start("job/go", {{"id", 2}, {"fail", true}});
    const std::string by_api = f.start("job/go", {{"id", 3}, {"nap", true}});
    const std::string by_event = f.start("job/go", {{"id", 4}, {"nap", true}});
    f.idle();
    CHECK(f.engine.cancel(by_api));
    CHECK_FALSE(f.engine.cancel(by_api));  // ended: nothing more to announce
    f.engine.send(EventInput{"job/stop", {{"id", 4}}});
    f.idle();

    const auto d = ends_of(f, done);
    REQUIRE(d.size() == 1);
    CHECK(d[0]["status"] == "completed");
    CHECK(d[0]["output"] == 10);
    CHECK(d[0]["trigger"] == "job/go");
    const auto x = ends_of(f, failed);
    REQUIRE(x.size() == 1);
    CHECK(x[0]["status"] == "failed");
    CHECK(x[0]["error"]["message"].get<std::string>().find("job failed") != std::string::npos);
    const auto a = ends_of(f, by_api);
    REQUIRE(a.size() == 1);
    CHECK(a[0]["status"] == "cancelled");
    CHECK(a[0]["error"].is_null());
    const auto e = ends_of(f, by_event);
    REQUIRE(e.size() == 1);
    CHECK(e[0]["status"] == "cancelled");
    CHECK(e[0]["error"]["type"] == "cancelled");
    // The "ends" runs announce nothing themselves (no on_end): exactly four ran.
    CHECK(f.count("SELECT COUNT(*) FROM runs WHERE workflow_id = 'ends'") == 4);
}

TEST_CASE("on_end: a parent's cancel announces its invoked child's end too") {
    Fixture f;
    add_ends(f);
    f.engine.add(announced(workflow("child").on_event("child/go"), [](Context& ctx) -> json {
        ctx.sleep("nap", 1h);
        return 1;
    }));
    f.engine.add(announced(workflow("parent").on_event("parent/go"), [](Context& ctx) -> json {
        return ctx.invoke("call", "child", json::object());
    }));
    const std::string parent = f.start("parent/go");
    f.idle();
    const auto children =
        f.engine.store().list_runs({.workflow_id = "child"}, std::nullopt, 10).runs;
    REQUIRE(children.size() == 1);
    CHECK(f.engine.cancel(parent));
    f.idle();
    REQUIRE(ends_of(f, parent).size() == 1);
    const auto c = ends_of(f, children[0].id);
    REQUIRE(c.size() == 1);
    CHECK(c[0]["status"] == "cancelled");
    CHECK(c[0]["trigger"] == "cairn/invoke");
}

TEST_CASE("a step executing when its run is cancelled leaves no record") {
    Fixture f;
    std::vector<std::string> ran;
    f.engine.add(workflow("long").on_event("long/go").run([&](Context& ctx) -> json {
        ctx.step("first", [&] {
            ran.push_back("first");
            return 1;
        });
        ctx.step("second", [&] {
            ran.push_back("second");
            // The cancel commits while the step executes (records are dated by the clock).
            f.clock.advance(1);
            CHECK(f.engine.cancel(ctx.run_id()));
            f.clock.advance(1);
            return 2;
        });
        ctx.step("third", [&] {
            ran.push_back("third");
            return 3;
        });
        return 0;
    }));
    const std::string run = f.start("long/go");
    f.idle();
    CHECK(f.run(run).status == "cancelled");
    CHECK(ran == std::vector<std::string>{"first", "second"});
    const auto steps = f.steps(run);
    CHECK(steps.size() == 1);
    CHECK(steps.contains("first"));
    CHECK(f.count("SELECT COUNT(*) FROM step_attempts WHERE step_key = 'second'") == 0);
}

TEST_CASE("cancel_on holds for invoked and cron runs, not only for runs started by events") {
    Fixture f;
    f.engine.add(workflow("child").cancel_on("job/stop", "data.job").run([](Context& ctx) -> json {
        ctx.sleep("nap", 1h);
        return 1;
    }));
    f.engine.add(workflow("parent").on_event("parent/go").run([](Context& ctx) -> json {
        return ctx.invoke("call", "child", {{"job", ctx.event()["data"]["job"]}});
    }));
    f.engine.add(
        workflow("ticking").cron("* * * * *").cancel_on("tick/stop").run([](Context& ctx) -> json {
            ctx.sleep("nap", 1h);
            return 1;
        }));
    const std::string parent = f.start("parent/go", {{"job", "j-1"}});
    CHECK(f.engine.fire_schedules() == 0);  // a new schedule starts from now
    f.clock.advance(60'000);
    CHECK(f.engine.fire_schedules() == 1);
    f.idle();
    const auto child = f.engine.store().list_runs({.workflow_id = "child"}, std::nullopt, 10).runs;
    const auto tick = f.engine.store().list_runs({.workflow_id = "ticking"}, std::nullopt, 10).runs;
    REQUIRE(child.size() == 1);
    REQUIRE(tick.size() == 1);
    CHECK(f.run(child[0].id).status == "sleeping");
    CHECK(f.run(tick[0].id).status == "sleeping");

    f.engine.send(EventInput{"job/stop", {{"job", "j-2"}}});  // another job's: no effect
    CHECK(f.run(child[0].id).status == "sleeping");
    f.engine.send(EventInput{"job/stop", {{"job", "j-1"}}});
    f.engine.send(EventInput{"tick/stop"});
    f.idle();
    CHECK(f.run(child[0].id).status == "cancelled");
    CHECK(f.run(tick[0].id).status == "cancelled");
    CHECK(f.run(parent).status == "failed");  // its invoke failed with the child's cancel
}

}  // namespace cairn::engine_test
