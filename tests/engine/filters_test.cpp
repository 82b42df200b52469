// Event filters by expression (waits, cancel_on, trigger filters) and groups of workflows
// replaced while the engine runs, as SDK apps use them; on the backend under test.

#include "cairn/context.hpp"
#include "engine/fixture.hpp"

namespace cairn::engine_test {

TEST_CASE("wait_for_event_where: the run's event is bound in; only a match resumes it") {
    Fixture f;
    f.engine.add(workflow("approve").on_event("order/placed").run([](Context& ctx) {
        auto ev = ctx.wait_for_event_where(
            "approval", "order/approved",
            "async.data.order == event.data.order && async.data.amount >= event.data.min", 1h);
        return ev ? (*ev)["data"]["by"] : json("timed out");
    }));
    const std::string run = f.start("order/placed", {{"order", "o-1"}, {"min", 10}});
    f.idle();
    CHECK(f.run(run).status == "waiting");
    // The stored expression no longer mentions the run's event.
    const auto stored = f.t.db().exec("SELECT expression FROM waits WHERE run_id = $1", run);
    REQUIRE(stored.size() == 1);
    const std::string text = stored.front().get<std::string>(0);
    CHECK(text.find("event.") == std::string::npos);
    CHECK(text.find("\"o-1\"") != std::string::npos);

    f.engine.send(EventInput{"order/approved", {{"order", "o-2"}, {"amount", 50}, {"by", "x"}}});
    f.engine.send(EventInput{"order/approved", {{"order", "o-1"}, {"amount", 5}, {"by", "y"}}});
    f.idle();
    CHECK(f.run(run).status == "waiting");
    f.engine.send(EventInput{"order/approved", {{"order", "o-1"}, {"amount", 10}, {"by", "ada"}}});
    f.idle();
    CHECK(f.run(run).status == "completed");
    CHECK(json::parse(*f.run(run).output) == "ada");
}

TEST_CASE("cancel_on with an expression, and a trigger filter") {
    Fixture f;
    Workflow w =
        workflow("ship")
            .on_event("order/paid")
            .cancel_on("order/refunded", "data.order", std::nullopt, "async.data.reason == 'fraud'")
            .run([](Context& ctx) {
                ctx.sleep("wait", 1h);
                return 1;
            });
    w.filter = [](const json& ev) { return ev["data"].value("amount", 0) > 100; };
    f.engine.add(std::move(w));
    CHECK(f.engine.send(EventInput{"order/paid", {{"order", "small"}, {"amount", 5}}})
              .run_ids.empty());
    const std::string run = f.start("order/paid", {{"order", "big"}, {"amount", 500}});
    f.idle();
    f.engine.send(EventInput{"order/refunded", {{"order", "big"}, {"reason", "customer"}}});
    CHECK(f.run(run).status == "sleeping");
    f.engine.send(EventInput{"order/refunded", {{"order", "big"}, {"reason", "fraud"}}});
    CHECK(f.run(run).status == "cancelled");
}

TEST_CASE("a trigger ending in '*' matches every event name it prefixes, once per workflow") {
    Fixture f;
    f.engine.add(
        workflow("orders").on_event("order/*").on_event("order/paid").run([](Context& ctx) {
            return ctx.event()["name"];
        }));
    f.engine.add(workflow("paid").on_event("order/paid").run([](Context&) { return 1; }));
    CHECK(f.engine.send(EventInput{"order/paid"}).run_ids.size() == 2);  // orders once, paid
    CHECK(f.engine.send(EventInput{"order/shipped"}).run_ids.size() == 1);
    CHECK(f.engine.send(EventInput{"order"}).run_ids.empty());
    CHECK(f.engine.send(EventInput{"orders/x"}).run_ids.empty());
    f.idle();
    CHECK(f.count("SELECT COUNT(*) FROM runs WHERE workflow_id = 'orders' AND status = "
                  "'completed'") == 2);
    CHECK(trigger_matches("a/*", "a/"));
    CHECK(trigger_matches("a.b", "a.b"));
    CHECK_FALSE(trigger_matches("a.b", "a.bc"));
}

TEST_CASE("replace_workflows: a group replaced while running, all or none") {
    Fixture f;
    f.engine.add(workflow("native").on_event("x/native").run([](Context&) { return 0; }));
    auto fn = [](int n) { return [n](Context& ctx) { return ctx.step("s", [n] { return n; }); }; };
    Workflow a = workflow("app-a").on_event("x/a").run(fn(1));
    a.app = "app";
    CHECK(f.engine.replace_workflows("app", {a}).empty());
    const std::string first = f.start("x/a");
    f.idle();
    CHECK(json::parse(*f.run(first).output) == 1);

    // A sync that changes a and adds b; then one that drops a.
    Workflow a2 = workflow("app-a").on_event("x/a").run(fn(2));
    Workflow b = workflow("app-b").on_event("x/b").run(fn(3));
    CHECK(f.engine.replace_workflows("app", {a2, b}).empty());
    const std::string second = f.start("x/a");
    f.idle();
    CHECK(json::parse(*f.run(second).output) == 2);
    CHECK(f.engine.replace_workflows("app", {b}) == std::vector<std::string>{"app-a"});
    CHECK(f.engine.send(EventInput{"x/a", json::object()}).run_ids.empty());
    CHECK(f.engine.find("app-a") == nullptr);
    CHECK(f.engine.find("app-b") != nullptr);

    // A group may not take a native workflow's id; nothing changes then.
    Workflow clash = workflow("native").on_event("x/c").run(fn(4));
    CHECK_THROWS_AS(f.engine.replace_workflows("app", {b, clash}), std::invalid_argument);
    CHECK(f.engine.find("app-b") != nullptr);
    Workflow bad = workflow("app-c").cancel_on("x", "", std::nullopt, "nope(").run(fn(5));
    CHECK_THROWS_AS(f.engine.replace_workflows("app", {bad}), std::invalid_argument);
    CHECK(f.engine.find("app-b") != nullptr);
    CHECK(f.engine.replace_workflows("app", {}) == std::vector<std::string>{"app-b"});
    CHECK(f.engine.find("app-b") == nullptr);
}

}  // namespace cairn::engine_test
