#pragma once

// Part of Cairn's public API (docs/library.md).

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "cairn/errors.hpp"
#include "cairn/workflow.hpp"

namespace cairn {

namespace engine::detail {
class Execution;
}
namespace storage {
class Transaction;
}

// What a workflow function sees of its run. Every durable operation takes a name; a name
// used again in one run gets a counter ("load", "load#2", ...) to form the operation's key.
//
// The function is replayed from the top on every resume: completed operations return
// their recorded result at once, so code between them must be deterministic and all side
// effects belong inside steps. Operations that must wait (sleep, wait_for_event, invoke,
// a step's retry backoff) end the execution by throwing an internal signal: never
// swallow it with `catch (...)` without `throw;`.
class Context {
  public:
    explicit Context(engine::detail::Execution& ex) : ex_(ex) {}

    // Runs `fn` once, records its result (JSON) and returns it; on replay returns the
    // recorded result without running `fn`. A throwing `fn` is retried by the policy;
    // when retries run out, StepFailed is thrown here. `fn` may return void (null).
    template <class Fn>
    json step(std::string_view name, Fn&& fn, const StepOptions& options = {}) {
        return run_step(
            name,
            [&]() -> json {
                if constexpr (std::is_void_v<std::invoke_result_t<Fn>>) {
                    fn();
                    return nullptr;
                } else {
                    return json(fn());
                }
            },
            options);
    }

    // A step whose work is writing to the engine's database: `fn(tx)` runs in a transaction
    // that also records the step, so its writes and the step's result commit together, once.
    // A throwing `fn` rolls its writes back before the retry policy applies, as do a
    // timeout and a lost lease; on replay the recorded result is returned without running
    // `fn`. `fn` must reach the database only through `tx` (on SQLite a write transaction
    // of its own would wait for this one) and should be short: it holds SQLite's one
    // writer, and on Postgres the locks it takes until the commit.
    template <class Fn>
    json transaction(std::string_view name, Fn&& fn, const StepOptions& options = {}) {
        return run_transaction(
            name,
            [&](storage::Transaction& tx) -> json {
                if constexpr (std::is_void_v<std::invoke_result_t<Fn, storage::Transaction&>>) {
                    fn(tx);
                    return nullptr;
                } else {
                    return json(fn(tx));
                }
            },
            options);
    }

    // Steps that run at once, each on a thread of its own: {{"a", fa}, {"b", fb}}. Each
    // branch is a step named by its name (recorded once, retried by `options` or the
    // workflow's policy); returns {"a": ..., "b": ...} once all completed, and on replay
    // at once. A branch that fails for good throws StepFailed for it, after the others
    // ended; branches waiting to retry suspend the run until the first is due (completed
    // ones are not run again). A branch must not call this Context (it throws).
    json parallel(const std::vector<std::pair<std::string, std::function<json()>>>& branches,
                  const StepOptions& options = {});

    // Durable sleeps: the run is suspended and resumed by any worker at the time.
    void sleep(std::string_view name, std::chrono::milliseconds duration);
    void sleep_until(std::string_view name, std::int64_t unix_ms);

    // Waits for an event named `event_name` whose field `match_field` (a dotted path into
    // the event, e.g. "data.id") equals the same field of this run's triggering event.
    // Returns the event ({id, name, data, ts}), or nullopt when `timeout` passes first.
    std::optional<json> wait_for_event(std::string_view name, std::string_view event_name,
                                       std::string_view match_field,
                                       std::chrono::milliseconds timeout);
    // The same with an expression instead of a field (docs/engine.md): the event must
    // satisfy it, `event` being this run's event and `async` the candidate, e.g.
    // `async.data.user_id == event.data.user_id && async.data.plan == "pro"`. A malformed
    // expression throws std::invalid_argument.
    std::optional<json> wait_for_event_where(std::string_view name, std::string_view event_name,
                                             std::string_view expression,
                                             std::chrono::milliseconds timeout);

    // Emits an event ({"name": ..., "data": ...}) exactly once, however often the run is
    // replayed; returns its id.
    std::string send_event(std::string_view name, const json& event);

    // Starts a run of `workflow_id` with `data` as its event data, waits for it, and
    // returns its output; throws StepFailed when it fails or is cancelled, or when
    // `timeout` passes first (then the child is cancelled; error type "timeout").
    json invoke(std::string_view name, std::string_view workflow_id, const json& data,
                std::optional<std::chrono::milliseconds> timeout = std::nullopt);

    const std::string& run_id() const;
    // The triggering event: {id, name, data, ts}.
    const json& event() const;
    // Every event of a batch run (Workflow::flow's batch), in arrival order; [event()]
    // for any other run.
    const json& events();
    // The attempt number (1-based) of the step now executing (in a parallel branch, the
    // branch's); 0 outside a step.
    int attempt() const;
    // One operation of the run's record: its key (the name, with "#n" when repeated),
    // kind (step, sleep, wait, send, invoke) and status.
    struct Recorded {
        std::string key;
        std::string kind;
        std::string status;
    };
    // What the run had recorded when this execution began, in order: for a driver that
    // replays a run from its record rather than from code (an SDK function); replaying
    // each entry by the operation of its kind and key returns its result.
    std::vector<Recorded> recorded() const;
    // A log line, stored with the attempt of the step now executing (and written to the
    // process log).
    void log(std::string_view line);

  private:
    json run_step(std::string_view name, const std::function<json()>& fn,
                  const StepOptions& options);
    json run_transaction(std::string_view name,
                         const std::function<json(storage::Transaction&)>& fn,
                         const StepOptions& options);
    engine::detail::Execution& ex_;
};

}  // namespace cairn
