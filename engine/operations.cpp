// The durable operations a workflow calls through its Context: steps (with retries and
// timeouts), steps in a transaction, sleeps, waits for events, sent events and invoked
// child runs. Each returns its recorded result on replay.

#include <fmt/format.h>

#include "engine/detail/execution.hpp"
#include "engine/detail/json_text.hpp"
#include "engine/expression.hpp"

namespace cairn::engine::detail {

namespace run_status = storage::run_status;
using std::chrono::milliseconds;
using storage::Transaction;

namespace {

// How long an invoke waits for its child when nothing else wakes it: the child's end
// completes the waiting step long before.
constexpr std::int64_t kInvokeSafetyNetMs = std::int64_t{365} * 24 * 3600 * 1000;

}  // namespace

// Runs `fn(tx)` in a transaction of its own that also writes the step's record (and the
// record of the step before it, if unwritten) behind the lease's fence: the writes and the
// records commit together or not at all. What `fn` throws rolls it all back and reaches
// the caller, as does TimedOut, or LeaseLost when the fence fails. The fence is checked
// with the records, after `fn`: a lost lease is rare, and a rollback undoes `fn`'s writes
// as well as checking first would have prevented them.
json Execution::commit_step(const Slot& slot, const std::function<json(Transaction&)>& fn,
                            int attempt, std::int64_t first_started, std::int64_t started,
                            std::optional<milliseconds> timeout) {
    json out;
    std::string status;
    const bool carried = unwritten_.has_value();
    rt_.db.transact([&](Transaction& tx) {
        out = fn(tx);
        const std::int64_t ended = now();
        if (timeout && ended - started > timeout->count()) throw TimedOut{};
        auto [rec, att] = step_written(slot, attempt, first_started, started, ended, "completed");
        rec.output = dump(out);
        rec.ended_at = ended;
        auto write_one = [&](const storage::StepRecord& r, const storage::AttemptRecord& a) {
            storage::RunWrite w{&held_.lease, &r, &a};
            storage::RunWrite* const one[] = {&w};
            rt_.store.write_runs(tx, one);
            if (!w.held) {
                ++rt_.counters.leases_lost;
                throw LeaseLost{};
            }
            status = w.run_status;
            // A cancelled run records nothing more: the step's own writes roll back too.
            if (status == run_status::kCancelled) throw Cancelled{};
        };
        if (unwritten_) write_one(unwritten_->step, unwritten_->attempt);
        write_one(rec, att);
    });
    status_ = status;
    unwritten_.reset();
    if (carried) recorded();  // two records committed: count both
    return out;
}

// Runs one attempt of a step: `fn`, or `in_tx` in a transaction that also writes the
// step's record (commit_step). What the attempt throws becomes its error, but the
// engine's signals, which unwind the execution.
Execution::Attempt Execution::try_step(const Slot& slot, const std::function<json()>& fn,
                                       const std::function<json(Transaction&)>* in_tx, Attempt a,
                                       std::optional<milliseconds> timeout) {
    current_attempt_ = a.number;
    logs_ = json::array();
    try {
        if (in_tx) {
            a.out = commit_step(slot, *in_tx, a.number, a.first_started, a.started, timeout);
            a.committed = true;
        } else {
            a.out = fn();
        }
    } catch (const Signal&) {
        current_attempt_ = 0;
        throw;
    } catch (const TimedOut&) {
        a.timed_out = true;
    } catch (...) {
        Failure f = failure_of(std::current_exception());
        a.error = std::move(f.error);
        a.retriable = f.retriable;
        a.retry_after = f.after;
    }
    current_attempt_ = 0;
    return a;
}

Execution::Failure Execution::failure_of(const std::exception_ptr& thrown) {
    try {
        std::rethrow_exception(thrown);
    } catch (const NonRetriableError& e) {
        return {error_json("non_retriable", e.what()), false, std::nullopt};
    } catch (const RetryAfterError& e) {
        return {error_json("retry_after", e.what()), true, e.delay()};
    } catch (const std::exception& e) {
        return {error_json("error", e.what()), true, std::nullopt};
    } catch (...) {
        return {error_json("error", "unknown exception"), true, std::nullopt};
    }
}

// A step (Context::step), or with `in_tx` a step in a transaction (Context::transaction):
// `in_tx(tx)`'s writes, the step's record and the record of the step before it commit
// together (commit_step), so the step before's record is not written first.
json Execution::run_step(std::string_view name, const std::function<json()>& fn,
                         const std::function<json(Transaction&)>* in_tx,
                         const StepOptions& options) {
    const Slot slot = next(name, "step", in_tx == nullptr);
    const RetryPolicy policy = options.retry.value_or(wf_.retry);
    const auto timeout = options.timeout ? options.timeout : wf_.step_timeout;
    Attempt a;
    std::optional<std::int64_t> first_started;
    if (slot.stored) {
        flush();
        const storage::StepRecord& s = *slot.stored;
        if (s.status == "completed") return parse_or_null(s.output);
        if (s.status == "failed") throw StepFailed(slot.key, parse_or_null(s.error));
        if (s.wake_at && now() < *s.wake_at) suspend_until(*s.wake_at);
        a.number = static_cast<int>(s.attempts) + 1;
        first_started = s.started_at;
    }
    boundary();
    a.started = now();
    a.first_started = first_started.value_or(a.started);
    a = try_step(slot, fn, in_tx, std::move(a), timeout);
    ++rt_.counters.steps_run;
    const std::int64_t ended = now();
    rt_.counters.observe_step(wf_.id, ended - a.started);
    if (a.committed) {
        recorded();
        return a.out;
    }
    std::string outcome = a.error ? "failed" : "completed";
    if (!a.error && (a.timed_out || (timeout && ended - a.started > timeout->count()))) {
        a.error = error_json("timeout", fmt::format("step ran {} ms, over its {} ms timeout",
                                                    ended - a.started, timeout->count()));
        outcome = "timed_out";
    }
    auto [rec, att] = step_written(slot, a.number, a.first_started, a.started, ended, outcome);
    if (!a.error) {
        rec.output = dump(a.out);
        rec.ended_at = ended;
        unwritten_.emplace(Unwritten{std::move(rec), std::move(att)});
        return a.out;
    }
    flush();  // a step in a transaction left it: its commit did not happen
    fail_or_retry(slot, policy, std::move(rec), std::move(att), std::move(*a.error), a.retriable,
                  a.retry_after);
}

// A failed attempt: the step fails for good (StepFailed) when it may not be retried or
// has no attempts left; otherwise the run is suspended until its retry is due.
void Execution::fail_or_retry(const Slot& slot, const RetryPolicy& policy, storage::StepRecord rec,
                              storage::AttemptRecord att, json error, bool retriable,
                              std::optional<milliseconds> after) {
    const int attempt = att.attempt;
    error["attempt"] = attempt;
    rec.error = dump(error);
    att.error = rec.error;
    const std::int64_t ended = att.ended_at;
    if (!retriable || attempt >= policy.max_attempts) {
        rec.status = "failed";
        rec.ended_at = ended;
        write(rec, &att);
        throw StepFailed(slot.key, error);
    }
    const std::int64_t wake = ended + (after ? *after : rt_.retry_delay(policy, attempt)).count();
    rec.status = "retrying";
    rec.wake_at = wake;
    ++rt_.counters.retries;
    suspend(wake, [&](Transaction& tx) {
        rt_.store.write_step(tx, rec);
        rt_.store.write_attempt(tx, att);
        rt_.store.set_run_status(tx, run_id(), run_status::kQueued, ended);
    });
}

void Execution::sleep_until(std::string_view name, std::int64_t until) {
    const Slot slot = next(name, "sleep");
    if (slot.stored) {
        storage::StepRecord s = *slot.stored;
        if (s.status == "completed") return;
        const std::int64_t wake = s.wake_at.value_or(0);
        if (now() < wake) suspend_until(wake);
        s.status = "completed";
        s.ended_at = now();
        write(s);
        return;
    }
    boundary();
    storage::StepRecord rec = record(slot, "sleep", "sleeping");
    rec.output = dump(json{{"until", until}});
    if (until <= now()) {
        rec.status = "completed";
        rec.ended_at = now();
        write(rec);
        return;
    }
    rec.wake_at = until;
    suspend(until, [&](Transaction& tx) {
        rt_.store.write_step(tx, rec);
        rt_.store.set_run_status(tx, run_id(), run_status::kSleeping, now());
    });
}

std::optional<json> Execution::wait_for_event(std::string_view name, std::string_view event_name,
                                              std::string_view match_field, milliseconds timeout,
                                              std::string_view expression) {
    const Slot slot = next(name, "wait");
    auto result = [](const std::optional<std::string>& output) -> std::optional<json> {
        json j = parse_or_null(output);
        if (j.is_null()) return std::nullopt;
        return j;
    };
    if (slot.stored) {
        const storage::StepRecord& s = *slot.stored;
        if (s.status == "completed") return result(s.output);
        if (s.status == "failed") throw StepFailed(slot.key, parse_or_null(s.error));
        const std::int64_t expires = s.wake_at.value_or(0);
        if (now() < expires) suspend_until(expires);
        bool timed_out = false;
        fenced([&](Transaction& tx) {
            timed_out = rt_.store.complete_waiting_step(tx, run_id(), slot.key, "null",
                                                        std::nullopt, now());
        });
        if (timed_out) return std::nullopt;
        // The event arrived just before the timeout was recorded: use it.
        for (const auto& step : rt_.store.steps(run_id())) {
            if (step.key == slot.key) return result(step.output);
        }
        return std::nullopt;
    }
    boundary();
    // With an expression, the run's own event is bound into it now; the field match is
    // then "any".
    std::optional<std::string> bound;
    if (!expression.empty()) bound = Expression::parse(expression).bind_event(event_);
    const json field = bound ? json(true) : lookup(event_, match_field);
    storage::StepRecord rec = record(slot, "wait", "waiting");
    rec.wake_at = now() + timeout.count();
    const storage::WaitRecord w{
        run_id(),
        slot.key,
        std::string(event_name),
        bound ? std::string() : std::string(match_field),
        field.is_null() ? std::nullopt : std::optional<std::string>(dump(field)),
        *rec.wake_at,
        bound};
    suspend(*rec.wake_at, [&](Transaction& tx) {
        rt_.store.write_step(tx, rec);
        rt_.store.add_wait(tx, w);
        rt_.store.set_run_status(tx, run_id(), run_status::kWaiting, now());
    });
}

std::string Execution::send_event(std::string_view name, const json& ev) {
    const Slot slot = next(name, "send");
    if (slot.stored && slot.stored->status == "completed") {
        return parse_or_null(slot.stored->output).value("event_id", std::string());
    }
    boundary();
    if (!ev.is_object() || !ev.contains("name") || !ev["name"].is_string()) {
        throw std::invalid_argument(
            fmt::format("send_event '{}': the event needs a string \"name\"", name));
    }
    EventInput in;
    in.name = ev["name"].get<std::string>();
    in.data = ev.value("data", json::object());
    in.idempotency_key = fmt::format("{}/{}", run_id(), slot.key);
    storage::StepRecord rec = record(slot, "send", "completed");
    rec.ended_at = now();
    SendResult sent;
    std::string status;
    fenced([&](Transaction& tx) {
        sent = rt_.intake.send(tx, std::span(&in, 1)).front();  // wakes its runs' workers
        rec.output = dump(json{{"event_id", sent.event_id}, {"run_ids", sent.run_ids}});
        rt_.store.write_step(tx, rec);
        status = rt_.store.run_status(tx, run_id());  // the event may cancel this run
    });
    status_ = status;
    return sent.event_id;
}

json Execution::invoke(std::string_view name, std::string_view workflow_id, const json& data,
                       std::optional<milliseconds> timeout) {
    const Slot slot = next(name, "invoke");
    if (slot.stored) {
        const storage::StepRecord& s = *slot.stored;
        if (s.status == "completed") return parse_or_null(s.output);
        if (s.status == "failed") throw StepFailed(slot.key, parse_or_null(s.error));
        const std::int64_t wake = s.wake_at.value_or(now() + kInvokeSafetyNetMs);
        if (now() < wake) suspend_until(wake);
        return invoke_timed_out(slot, s);
    }
    boundary();
    storage::StepRecord rec = record(slot, "invoke", "waiting");
    const Workflow* child = rt_.registry.find(workflow_id);
    if (child == nullptr) {
        const json error = error_json("unknown_workflow",
                                      fmt::format("no workflow '{}' is registered", workflow_id));
        rec.status = "failed";
        rec.error = dump(error);
        rec.ended_at = now();
        write(rec);
        throw StepFailed(slot.key, error);
    }
    rec.wake_at = now() + (timeout ? timeout->count() : kInvokeSafetyNetMs);
    fenced([&](Transaction& tx) {
        storage::NewEvent e;
        e.name = "cairn/invoke";
        e.data = dump(data);
        e.idempotency_key = fmt::format("{}/{}", run_id(), slot.key);
        const storage::NewRun run{child->id, child->version, 0, run_id(), slot.key};
        auto ins = rt_.store.insert_event(tx, e, std::span(&run, 1), now());
        if (!ins.duplicate && !ins.run_ids.empty() && !child->cancel_on.empty()) {
            rt_.intake.listen_for_cancel(
                tx, ins.run_ids[0], *child,
                json{{"id", ins.event_id}, {"name", e.name}, {"data", data}, {"ts", now()}});
        }
        json waiting = {{"child_run_id", ins.run_ids.empty() ? "" : ins.run_ids[0]}};
        if (timeout) waiting["timeout_ms"] = timeout->count();
        rec.output = dump(waiting);
        rt_.store.write_step(tx, rec);
        rt_.store.set_run_status(tx, run_id(), run_status::kWaiting, now());
        rt_.store.release(tx, held_.lease, *rec.wake_at);
    });
    rt_.pool.announce();
    throw Suspend{};
}

// The invoke's wait is over and its child has not ended: the child is cancelled and the
// step fails, unless the child's end was recorded first (then that stands).
json Execution::invoke_timed_out(const Slot& slot, const storage::StepRecord& s) {
    const json recorded = parse_or_null(s.output);
    const std::string child = recorded.value("child_run_id", std::string());
    const json error =
        error_json("timeout", fmt::format("the invoked run {} did not end within {} ms", child,
                                          recorded.value("timeout_ms", kInvokeSafetyNetMs)));
    bool timed_out = false;
    fenced([&](Transaction& tx) {
        timed_out = rt_.store.complete_waiting_step(tx, run_id(), slot.key, std::nullopt,
                                                    dump(error), now());
    });
    if (timed_out) {
        if (!child.empty()) {
            rt_.db.transact([&](Transaction& tx) { rt_.intake.cancel(tx, child); });
        }
        throw StepFailed(slot.key, error);
    }
    for (const auto& step : rt_.store.steps(run_id())) {
        if (step.key != slot.key) continue;
        if (step.status == "failed") throw StepFailed(slot.key, parse_or_null(step.error));
        return parse_or_null(step.output);
    }
    throw StepFailed(slot.key, error);
}

}  // namespace cairn::engine::detail
