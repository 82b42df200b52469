// Invoked runs and deadlines: a child cancelled in any state fails its parent's invoke at
// once, cancelling a parent cancels its children, invoke's own timeout, and run timeouts
// that fail a suspended run at the deadline rather than when it would wake.

#include <doctest/doctest.h>

#include <string>

#include "engine/fixture.hpp"

namespace cairn::engine_test {
namespace {

// A parent that invokes `child` and returns how the invoke ended: the child's output, or
// {"failed": error type}.
Workflow parent_of(const std::string& child,
                   std::optional<std::chrono::milliseconds> timeout = std::nullopt) {
    return workflow("parent-" + child).on_event("go/" + child).run([=](Context& ctx) -> json {
        try {
            return ctx.invoke("call", child, json::object(), timeout);
        } catch (const StepFailed& e) {
            return json{{"failed", e.error()["type"]}};
        }
    });
}

// The run the parent's invoke started.
std::string child_of(Fixture& f, const std::string& parent) {
    return json::parse(*f.steps(parent)["call"].output)["child_run_id"].get<std::string>();
}

}  // namespace

TEST_CASE("a child cancelled while queued, sleeping, waiting or running fails the invoke at once") {
    Fixture f;
    f.engine.add(workflow("queued").run([](Context&) { return 1; }));
    f.engine.add(workflow("sleeping").run([](Context& ctx) {
        ctx.sleep("nap", 1h);
        return 1;
    }));
    f.engine.add(workflow("waiting").run([](Context& ctx) {
        ctx.wait_for_event("hear", "never/sent", "data.id", 1h);
        return 1;
    }));
    f.engine.add(workflow("running").run([&f](Context& ctx) {
        ctx.step("cancel me", [&] { f.engine.cancel(ctx.run_id()); });
        ctx.step("never", [] { return 1; });
        return 1;
    }));
    for (const std::string child : {"queued", "sleeping", "waiting", "running"}) {
        CAPTURE(child);
        f.engine.add(parent_of(child));
        const auto parent = f.start("go/" + child);
        CHECK(f.engine.run_until_idle(1) == 1);  // the parent alone: it invokes and waits
        const auto kid = child_of(f, parent);
        if (child == "sleeping" || child == "waiting") {
            CHECK(f.engine.run_until_idle(1) == 1);
            CHECK(f.run(kid).status == child);
        }
        if (child != "running") CHECK(f.engine.cancel(kid));
        f.idle();  // no clock moves: only a prompt wake-up lets the parent finish
        CHECK(f.run(kid).status == "cancelled");
        CHECK(f.run(parent).status == "completed");
        CHECK(json::parse(*f.run(parent).output) == json{{"failed", "cancelled"}});
        CHECK(child_of(f, parent) == kid);  // the failed invoke still names its child
    }
}

TEST_CASE("cancelling a parent cancels its unfinished children and theirs") {
    Fixture f;
    f.engine.add(workflow("grandchild").run([](Context& ctx) {
        ctx.sleep("nap", 1h);
        return 1;
    }));
    f.engine.add(workflow("middle").run(
        [](Context& ctx) { return ctx.invoke("call", "grandchild", json::object()); }));
    f.engine.add(workflow("done").run([](Context&) { return 1; }));
    f.engine.add(workflow("top").on_event("go").run([](Context& ctx) {
        ctx.invoke("first", "done", json::object());
        return ctx.invoke("call", "middle", json::object());
    }));
    const auto top = f.start("go");
    f.idle();
    const auto middle = child_of(f, top);
    const auto grandchild = child_of(f, middle);
    CHECK(f.run(grandchild).status == "sleeping");
    const auto done = json::parse(*f.steps(top)["first"].output);  // the finished child's output
    CHECK(done == 1);

    CHECK(f.engine.cancel(top));
    CHECK(f.run(top).status == "cancelled");
    CHECK(f.run(middle).status == "cancelled");
    CHECK(f.run(grandchild).status == "cancelled");
    f.clock.advance(2 * 3600 * 1000);
    CHECK(f.idle() == 0);  // nothing of them runs again
    CHECK(f.run(grandchild).status == "cancelled");
}

TEST_CASE("invoke with a timeout returns the child's output in time, else fails and cancels it") {
    Fixture f;
    f.engine.add(workflow("quick").run([](Context&) { return 7; }));
    f.engine.add(workflow("slow").run([](Context& ctx) {
        ctx.sleep("nap", 1h);
        return 1;
    }));
    f.engine.add(parent_of("quick", 10s));
    f.engine.add(parent_of("slow", 10s));

    const auto quick = f.start("go/quick");
    f.idle();
    CHECK(json::parse(*f.run(quick).output) == 7);

    const auto slow = f.start("go/slow");
    f.idle();
    CHECK(f.run(slow).status == "waiting");
    const auto kid = child_of(f, slow);
    f.clock.advance(10'001);
    f.idle();
    CHECK(f.run(slow).status == "completed");
    CHECK(json::parse(*f.run(slow).output) == json{{"failed", "timeout"}});
    CHECK(f.run(kid).status == "cancelled");
}

TEST_CASE("a run timeout fails a sleeping or waiting run at its deadline") {
    Fixture f;
    f.engine.add(workflow("sleeper").on_event("sleep").run_timeout(5s).run([](Context& ctx) {
        ctx.sleep("nap", 1h);
        return 1;
    }));
    f.engine.add(workflow("waiter").on_event("wait").run_timeout(5s).run([](Context& ctx) {
        ctx.wait_for_event("hear", "never/sent", "data.id", 1h);
        return 1;
    }));
    const auto sleeper = f.start("sleep");
    const auto waiter = f.start("wait");
    f.idle();
    CHECK(f.run(sleeper).status == "sleeping");
    CHECK(f.run(waiter).status == "waiting");
    f.clock.advance(4'000);
    CHECK(f.idle() == 0);  // before the deadline nothing wakes
    f.clock.advance(1'001);
    f.idle();
    for (const auto& id : {sleeper, waiter}) {
        CHECK(f.run(id).status == "failed");
        CHECK(json::parse(*f.run(id).error)["type"] == "timeout");
    }
}

}  // namespace cairn::engine_test
