#include "examples/hello_workflow.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <thread>

#include "common/time.hpp"

namespace cairn::examples {

void register_examples(engine::Engine& engine) {
    // [hello-workflow]
    engine.add(workflow("hello").on_event("example/hello").retries(3).run([](Context& ctx) {
        const json& data = ctx.event()["data"];
        const std::string name = data.value("name", std::string("world"));
        const auto work = std::chrono::milliseconds(
            std::clamp<std::int64_t>(data.value("work_ms", 0), 0, 10'000));
        auto busy = [work] { std::this_thread::sleep_for(work); };

        auto greeting = ctx.step("greet", [&] {
            busy();
            return "hello, " + name;
        });
        auto letters = ctx.step("count", [&] {
            busy();
            const auto text = greeting.get<std::string>();
            return std::count_if(text.begin(), text.end(),
                                 [](unsigned char c) { return std::isalpha(c) != 0; });
        });
        auto loud = ctx.step("shout", [&] {
            busy();
            std::string text = greeting.get<std::string>();
            for (char& c : text) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
            return text + "!";
        });
        auto backwards = ctx.step("reverse", [&] {
            busy();
            std::string text = greeting.get<std::string>();
            std::reverse(text.begin(), text.end());
            return text;
        });
        return ctx.step("summary", [&] {
            busy();
            return json{{"greeting", greeting},
                        {"letters", letters},
                        {"loud", loud},
                        {"backwards", backwards}};
        });
    }));
    // [hello-workflow]

    // With CAIRN_EXAMPLE_CRON set (e.g. "* * * * *"), a workflow on that schedule, to try
    // cron schedules out; its runs return the tick they ran for.
    if (const char* cron = std::getenv("CAIRN_EXAMPLE_CRON"); cron != nullptr && *cron != 0) {
        engine.add(workflow("tick").cron(cron).run([](Context& ctx) {
            return ctx.step("tick", [&] { return ctx.event()["data"]["tick"]; });
        }));
    }

    // Fails for good (no retries) while the clock is before data.fail_until_ms, so a test
    // or a person can watch a failure and then retry it successfully.
    engine.add(workflow("flaky").on_event("example/flaky").run([](Context& ctx) {
        const std::int64_t fail_until = ctx.event()["data"].value("fail_until_ms", std::int64_t{0});
        auto prepared = ctx.step("prepare", [] { return "ready"; });
        auto called = ctx.step("call-service", [&] {
            if (cairn::now_ms() < fail_until) throw NonRetriableError("service unavailable");
            return "answered";
        });
        return json{{"prepared", prepared}, {"called", called}};
    }));

    // [flow-control]
    // At most two runs per customer execute at once, across every process; runs beyond
    // wait in order. data.work_ms (0..10000) keeps each run's one step busy that long.
    engine.add(workflow("limited")
                   .on_event("example/limited")
                   .concurrency(2, "event.data.customer")
                   .run([](Context& ctx) {
                       const auto work = std::clamp<std::int64_t>(
                           ctx.event()["data"].value("work_ms", 0), 0, 10'000);
                       return ctx.step("work", [&] {
                           std::this_thread::sleep_for(std::chrono::milliseconds(work));
                           return ctx.event()["data"].value("customer", json(nullptr));
                       });
                   }));
    // Starts no more than five runs a second, one every 200 ms; none is dropped.
    engine.add(workflow("throttled")
                   .on_event("example/throttled")
                   .throttle({5, std::chrono::seconds(1), 1, ""})
                   .run([](Context& ctx) { return ctx.step("work", [] { return 1; }); }));
    // [flow-control]

    // Invokes the workflow data.workflow (native, or an SDK app's function) with data.data
    // and returns its output; with data.emit ({name, data}) it first sends that event.
    engine.add(workflow("relay").on_event("example/relay").run([](Context& ctx) {
        const json& data = ctx.event()["data"];
        if (data.contains("emit")) ctx.send_event("emit", data["emit"]);
        const std::string target = data.value("workflow", std::string());
        if (target.empty()) return json(nullptr);
        return ctx.invoke("call", target, data.value("data", json::object()));
    }));
}

}  // namespace cairn::examples
