#pragma once

// Part of Cairn's public API (docs/library.md).

#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "cairn/event.hpp"
#include "cairn/flow_control.hpp"

namespace cairn {

using json = nlohmann::json;
class Context;

// How a failing step is retried: up to `max_attempts` attempts in all, waiting
// min(max_delay, initial_delay * multiplier^(n-1)) after the n-th failure — or, with
// jitter (the default), a uniformly random time between zero and that ceiling ("full
// jitter"), which spreads retries of many runs apart.
struct RetryPolicy {
    int max_attempts = 4;
    std::chrono::milliseconds initial_delay{1000};
    double multiplier = 2.0;
    std::chrono::milliseconds max_delay{std::chrono::minutes(10)};
    bool jitter = true;

    // The ceiling of the wait after `failed_attempts` failures (1 = after the first).
    std::chrono::milliseconds ceiling(int failed_attempts) const;
    // The actual wait: the ceiling, or a random time up to it with jitter.
    std::chrono::milliseconds delay(int failed_attempts, std::mt19937_64& rng) const;
};

// Per-step overrides of the workflow's options.
struct StepOptions {
    std::optional<RetryPolicy> retry;
    std::optional<std::chrono::milliseconds> timeout;
};

using WorkflowFn = std::function<json(Context&)>;

// An event that cancels a run (Workflow::cancel_on): one named `event` whose field `match`
// (a path such as "data.order_id") equals the same field of the run's own event — any
// such event when `match` is empty — arriving within `timeout` of the run's start (at
// any time without one).
//
// `expression`, when set, must hold too: an expression over the run's event (`event`) and
// the cancelling one (`async`), e.g. `async.data.reason == "fraud"` (docs/engine.md).
struct CancelOn {
    std::string event;
    std::string match;
    std::optional<std::chrono::milliseconds> timeout;
    std::string expression = {};
};

// How a run ended, as Workflow::on_end sees it.
struct RunEnded {
    std::string run_id;
    std::string status;  // "completed", "failed" or "cancelled"
    json event;          // the run's event: {id, name, data, ts}
    json output;         // completed: what the run returned
    json error;          // failed: the error; cancelled: why, when known; else null
};

// Whether an event named `name` matches a trigger: the same name, or for a trigger ending
// in '*' ("order/*"), any name that starts with the part before it.
inline bool trigger_matches(std::string_view trigger, std::string_view name) {
    if (!trigger.ends_with('*')) return trigger == name;
    return name.starts_with(trigger.substr(0, trigger.size() - 1));
}

// A registered workflow. Build one with workflow("id")...run(fn).
struct Workflow {
    std::string id;
    std::string version = "1";
    // The SDK app whose function this is (docs/sdk.md); empty for a workflow in C++.
    std::string app;
    std::vector<std::string> triggers;  // event names that start a run ("order/*": a prefix)
    RetryPolicy retry;                  // default for every step
    // A step that runs longer than this counts as a failed (retried) attempt. C++ cannot
    // stop a running function safely, so the limit is checked when the step returns.
    std::optional<std::chrono::milliseconds> step_timeout;
    // A run still going this long after it started fails at its next step boundary.
    std::optional<std::chrono::milliseconds> run_timeout;
    // A cron schedule ("TZ=Europe/Paris 0 3 * * *", "@hourly"; docs/engine.md): a run
    // starts at each tick, its event "cairn/cron" with data {workflow, cron, tick, tick_ms}.
    std::optional<std::string> cron;
    // Events that cancel a run: a running one stops at its next step boundary; a queued,
    // sleeping or waiting one at once.
    std::vector<CancelOn> cancel_on;
    // When set, an event starts a run only if this returns true for it ({id, name, data,
    // ts}); it must be quick and must not throw.
    std::function<bool(const json& event)> filter;
    WorkflowFn fn;
    // Runs as its own durable run (workflow "<id>/on-failure") when a run fails; its event
    // is "cairn/run.failed" with data {run_id, workflow_id, error, event}.
    WorkflowFn on_failure;
    // The events a run sends as it ends, however it ends (completed, failed, or cancelled
    // by an operator, an event or its parent's cancel), in the transaction that ends it:
    // each end is announced once. They start runs as any event does.
    std::function<std::vector<EventInput>(const RunEnded&)> on_end;
    // Concurrency, throttle, rate limit, debounce, batching, priority, singleton and
    // idempotency (docs/flow-control.md).
    FlowControl flow;
};

class WorkflowBuilder {
  public:
    explicit WorkflowBuilder(std::string id) { w_.id = std::move(id); }
    WorkflowBuilder& version(std::string v) {
        w_.version = std::move(v);
        return *this;
    }
    WorkflowBuilder& on_event(std::string name) {
        w_.triggers.push_back(std::move(name));
        return *this;
    }
    // Starts a run at each tick of a cron expression; registration fails (std::
    // invalid_argument naming the expression) when it is malformed.
    WorkflowBuilder& cron(std::string expression) {
        w_.cron = std::move(expression);
        return *this;
    }
    WorkflowBuilder& cancel_on(std::string event, std::string match = {},
                               std::optional<std::chrono::milliseconds> timeout = std::nullopt,
                               std::string expression = {}) {
        w_.cancel_on.push_back(
            CancelOn{std::move(event), std::move(match), timeout, std::move(expression)});
        return *this;
    }
    // Retries per step after the first attempt: retries(4) allows 5 attempts.
    WorkflowBuilder& retries(int n) {
        w_.retry.max_attempts = n + 1;
        return *this;
    }
    WorkflowBuilder& retry_policy(RetryPolicy p) {
        w_.retry = p;
        return *this;
    }
    WorkflowBuilder& step_timeout(std::chrono::milliseconds t) {
        w_.step_timeout = t;
        return *this;
    }
    WorkflowBuilder& run_timeout(std::chrono::milliseconds t) {
        w_.run_timeout = t;
        return *this;
    }
    WorkflowBuilder& on_failure(WorkflowFn fn) {
        w_.on_failure = std::move(fn);
        return *this;
    }
    // Flow control (docs/flow-control.md); registration fails (std::invalid_argument)
    // for a malformed key expression or a limit out of range.
    WorkflowBuilder& concurrency(int limit, std::string key = {}) {
        w_.flow.concurrency.push_back(Concurrency{limit, std::move(key)});
        return *this;
    }
    WorkflowBuilder& throttle(Throttle t) {
        w_.flow.throttle = std::move(t);
        return *this;
    }
    WorkflowBuilder& rate_limit(RateLimit r) {
        w_.flow.rate_limit = std::move(r);
        return *this;
    }
    WorkflowBuilder& debounce(Debounce d) {
        w_.flow.debounce = std::move(d);
        return *this;
    }
    WorkflowBuilder& batch(Batching b) {
        w_.flow.batch = std::move(b);
        return *this;
    }
    WorkflowBuilder& priority(std::string expression) {
        w_.flow.priority = std::move(expression);
        return *this;
    }
    WorkflowBuilder& singleton(Singleton s) {
        w_.flow.singleton = std::move(s);
        return *this;
    }
    WorkflowBuilder& idempotency(std::string key,
                                 std::chrono::milliseconds window = std::chrono::hours(24)) {
        w_.flow.idempotency = Idempotency{std::move(key), window};
        return *this;
    }
    Workflow run(WorkflowFn fn) {
        w_.fn = std::move(fn);
        return std::move(w_);
    }

  private:
    Workflow w_;
};

inline WorkflowBuilder workflow(std::string id) {
    return WorkflowBuilder(std::move(id));
}

}  // namespace cairn
