// Context::parallel: branches run at once, each recorded once and retried on its own.

#include <doctest/doctest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>

#include "engine/fixture.hpp"

namespace cairn::engine_test {

TEST_CASE("parallel branches run at once, are recorded once and replay at once") {
    Fixture f;
    std::mutex mu;
    std::condition_variable cv;
    int arrived = 0;
    std::atomic<int> calls{0};
    // Each branch waits (up to 10 s) for the other to arrive: only together do both see 2.
    auto meet = [&] {
        ++calls;
        std::unique_lock lock(mu);
        ++arrived;
        cv.notify_all();
        return cv.wait_for(lock, std::chrono::seconds(10), [&] { return arrived >= 2; });
    };
    f.engine.add(workflow("fan").on_event("fan").run([&](Context& ctx) {
        const json both = ctx.parallel({{"a", meet}, {"b", meet}});
        ctx.sleep("then", 1000ms);
        return json{{"both", both}, {"after", ctx.step("after", [] { return 3; })}};
    }));
    const auto id = f.start("fan");
    f.idle();
    CHECK(f.run(id).status == "sleeping");
    f.clock.advance(1000);
    f.idle();  // replays: the branches' results come from their records
    const auto r = f.run(id);
    CHECK(r.status == "completed");
    CHECK(json::parse(*r.output) == json{{"both", {{"a", true}, {"b", true}}}, {"after", 3}});
    CHECK(calls == 2);
    const auto steps = f.steps(id);
    CHECK(steps.at("a").status == "completed");
    CHECK(steps.at("b").status == "completed");
    CHECK(steps.at("a").seq + 1 == steps.at("b").seq);
}

TEST_CASE("a failing branch retries on its own; one that fails for good is StepFailed") {
    Fixture f;
    std::atomic<int> a_calls{0}, b_calls{0};
    f.engine.add(workflow("retrying")
                     .on_event("retrying")
                     .retry_policy(exact(3, 1000ms))
                     .run([&](Context& ctx) {
                         return ctx.parallel({{"a", [&] { return ++a_calls; }},
                                              {"b", [&]() -> json {
                                                   if (++b_calls < 2)
                                                       throw std::runtime_error("flaky");
                                                   return "b ok";
                                               }}});
                     }));
    const auto id = f.start("retrying");
    f.idle();
    CHECK(f.run(id).status == "queued");  // b waits for its retry
    CHECK(f.steps(id).at("b").status == "retrying");
    f.clock.advance(999);
    CHECK(f.idle() == 0);
    f.clock.advance(1);
    f.idle();
    CHECK(f.run(id).status == "completed");
    CHECK(json::parse(*f.run(id).output) == json{{"a", 1}, {"b", "b ok"}});
    CHECK(a_calls == 1);  // a completed the first time and was not run again
    CHECK(b_calls == 2);

    f.engine.add(
        workflow("failing").on_event("failing").retry_policy(exact(1)).run([](Context& ctx) {
            try {
                ctx.parallel({{"fine", [] { return 1; }},
                              {"broken", []() -> json { throw NonRetriableError("no"); }},
                              {"nested", [&ctx] { return ctx.step("inner", [] { return 1; }); }}});
            } catch (const StepFailed& e) {
                return json{{"step", e.key()}, {"error", e.error()}};
            }
            return json("unreachable");
        }));
    const auto failing = f.start("failing");
    f.idle();
    const auto r = f.run(failing);
    CHECK(r.status == "completed");
    const json out = json::parse(*r.output);
    CHECK(out["step"] == "broken");
    CHECK(out["error"]["message"] == "no");
    const auto steps = f.steps(failing);
    CHECK(steps.at("fine").status == "completed");
    CHECK(steps.at("nested").status == "failed");
    CHECK(steps.at("nested").error->find("parallel branch") != std::string::npos);

    f.engine.add(workflow("dup").on_event("dup").run([](Context& ctx) {
        return ctx.parallel({{"x", [] { return 1; }}, {"x", [] { return 2; }}});
    }));
    const auto dup = f.start("dup");
    f.idle();
    CHECK(f.run(dup).status == "failed");
    CHECK(f.run(dup).error->find("the branch name 'x' is given twice") != std::string::npos);
}

}  // namespace cairn::engine_test
