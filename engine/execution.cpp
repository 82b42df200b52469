// Executing a claimed run: loading it, replaying its workflow, and recording how it ends.
// The durable operations a workflow calls are in operations.cpp.

#include "engine/detail/execution.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "cairn/context.hpp"
#include "engine/detail/json_text.hpp"

namespace cairn::engine::detail {

namespace run_status = storage::run_status;
using storage::Transaction;

namespace {

bool is_final(std::string_view status) {
    return status == run_status::kCompleted || status == run_status::kFailed ||
           status == run_status::kCancelled;
}

}  // namespace

Runtime::Runtime(storage::Database& database, const Clock& c, std::string worker_id)
    : db(database),
      clock(c),
      store(database),
      writer(database, store, counters),
      pool(database, store, c, std::move(worker_id)),
      flow(database, store, registry),
      intake(database, store, registry, pauses, pool, flow, c) {}

std::chrono::milliseconds Runtime::retry_delay(const RetryPolicy& policy, int failed) {
    std::lock_guard lock(rng_mu_);
    return policy.delay(failed, rng_);
}

void Runtime::execute(const Held& held, std::optional<storage::RunState> state) {
    const storage::Lease& lease = held.lease;
    ++counters.executions;
    try {
        if (!state) state = store.load(lease.run_id);
        if (!state || is_final(state->run.status)) {
            writer.fenced(lease, [&](Transaction& tx) { store.release(tx, lease, std::nullopt); });
            return;
        }
    } catch (const Signal&) {
        return;
    } catch (const std::exception& e) {
        spdlog::error("run {}: cannot load: {}", lease.run_id, e.what());
        return;  // the lease expires and the run is retried elsewhere
    }
    const Workflow* wf = registry.find(state->run.workflow_id);
    if (wf == nullptr) {
        try {
            const auto error = dump(error_json(
                "unknown_workflow", fmt::format("workflow '{}' is not registered in worker {}",
                                                state->run.workflow_id, pool.worker_id())));
            writer.fenced(lease, [&](Transaction& tx) {
                store.finish_run(tx, lease, run_status::kFailed, std::nullopt, error, now());
            });
            counters.ended();
        } catch (const Signal&) {
        } catch (const std::exception& e) {
            spdlog::error("run {}: could not record its failure: {}", lease.run_id, e.what());
        }
        return;
    }
    Execution(*this, held, std::move(*state), *wf).run();
}

Execution::Execution(Runtime& rt, Held held, storage::RunState state, const Workflow& wf)
    : rt_(rt), held_(std::move(held)), state_(std::move(state)), wf_(wf) {
    event_ = event_json(state_.event);
    status_ = state_.run.status;
    for (auto& step : state_.steps) by_seq_.emplace(step.seq, &step);
    // The claim already marked the run running.
    if (!state_.run.started_at) state_.run.started_at = now();
}

// Records an ending; a lost lease or a database failure leaves the run to another worker.
template <class Fn>
void Execution::finish(Fn&& fn) {
    try {
        fn();
        rt_.counters.ended();
    } catch (const LeaseLost&) {
        spdlog::info("run {}: lease lost while finishing; another worker owns it", run_id());
    } catch (const Infrastructure& e) {
        spdlog::error("run {}: could not record the outcome: {}", run_id(), e.message);
    }
}

void Execution::run() {
    try {
        Context ctx(*this);
        const json output = wf_.fn(ctx);
        finish([&] { finish_completed(output); });
    } catch (const Suspend&) {
    } catch (const LeaseLost&) {
        spdlog::info("run {}: lease lost; another worker owns it now", run_id());
    } catch (const Cancelled&) {
        finish([&] { finish_cancelled(); });
    } catch (const RunTimedOut& t) {
        finish([&] {
            finish_failed(
                error_json("timeout", fmt::format("run exceeded its {} ms timeout", t.limit_ms)));
        });
    } catch (const Infrastructure& e) {
        spdlog::error("run {}: database error; the run resumes when its lease expires: {}",
                      run_id(), e.message);
    } catch (const StepFailed& e) {
        finish([&] { finish_failed(e.error()); });
    } catch (const NonDeterministicError& e) {
        finish([&] { finish_failed(error_json("non_deterministic", e.what())); });
    } catch (const std::exception& e) {
        finish([&] { finish_failed(error_json("workflow_error", e.what())); });
    } catch (const Signal&) {
    } catch (...) {
        finish([&] { finish_failed(error_json("workflow_error", "unknown exception")); });
    }
}

// ---- the record ---------------------------------------------------------------------------

void Execution::write(const storage::StepRecord& rec, const storage::AttemptRecord* attempt) {
    storage::RunWrite w{&held_.lease, &rec, attempt};
    status_ = rt_.writer.record(w);
}

void Execution::flush() {
    if (!unwritten_) return;
    write(unwritten_->step, &unwritten_->attempt);
    unwritten_.reset();
    recorded();
}

void Execution::fenced(const std::function<void(Transaction&)>& fn, bool ending) {
    bool cancelled = false;
    rt_.writer.fenced(held_.lease, [&](Transaction& tx) {
        cancelled = !ending && rt_.store.run_status(tx, run_id()) == run_status::kCancelled;
        if (!cancelled) fn(tx);
    });
    if (cancelled) {
        status_ = run_status::kCancelled;
        throw Cancelled{};
    }
}

void Execution::recorded() {
    if (rt_.step_recorded) rt_.step_recorded();
}

Execution::Slot Execution::next(std::string_view name, std::string_view kind, bool write_last) {
    if (write_last) flush();
    if (name.empty()) throw std::invalid_argument("operation name must not be empty");
    if (std::this_thread::get_id() != thread_) {
        throw std::logic_error(fmt::format(
            "'{}' was called inside a parallel branch; durable operations cannot nest", name));
    }
    if (current_attempt_ != 0) {
        throw std::logic_error(
            fmt::format("'{}' was called inside a step; durable operations cannot nest", name));
    }
    const int n = ++name_counts_[std::string(name)];
    Slot slot{n == 1 ? std::string(name) : fmt::format("{}#{}", name, n), next_seq_++, nullptr};
    if (auto it = by_seq_.find(slot.seq); it != by_seq_.end()) {
        slot.stored = it->second;
        if (slot.stored->key != slot.key || slot.stored->kind != kind) {
            throw NonDeterministicError(fmt::format(
                "non-deterministic workflow: operation #{} was recorded as {} '{}' but the code "
                "now asks for {} '{}'",
                slot.seq + 1, slot.stored->kind, slot.stored->key, kind, slot.key));
        }
    }
    return slot;
}

void Execution::boundary() {
    if (held_.lost->load()) throw LeaseLost{};
    if (rt_.pool.stopping()) {
        flush();
        fenced([&](Transaction& tx) { rt_.store.release(tx, held_.lease, now()); }, true);
        throw Suspend{};
    }
    // The status as of this execution's last write (or its load): a cancel that commits
    // while a step runs stops the run before the next one.
    if (status_ == run_status::kCancelled) throw Cancelled{};
    check_deadline();
}

// The run timeout: past it the run fails, here or when a suspended run wakes for it.
std::optional<std::int64_t> Execution::deadline() const {
    if (!wf_.run_timeout || !state_.run.started_at) return std::nullopt;
    return *state_.run.started_at + wf_.run_timeout->count() + 1;
}

void Execution::check_deadline() const {
    if (const auto d = deadline(); d && now() >= *d)
        throw RunTimedOut{{}, wf_.run_timeout->count()};
}

// A recorded operation that still waits suspends the run again, unless the run's deadline
// (when it woke early) has passed.
void Execution::suspend_until(std::int64_t due) {
    check_deadline();
    suspend(due, [](Transaction&) {});
}

// A run with a timeout wakes at its deadline at the latest, so a sleeping or waiting run
// fails then, not when it would have woken.
void Execution::suspend(std::int64_t due, const std::function<void(Transaction&)>& fn) {
    if (const auto d = deadline()) due = std::min(due, *d);
    flush();
    fenced([&](Transaction& tx) {
        fn(tx);
        rt_.store.release(tx, held_.lease, due);
    });
    rt_.pool.due_again(due);
    throw Suspend{};
}

storage::StepRecord Execution::record(const Slot& slot, std::string_view kind,
                                      std::string_view step_status) const {
    storage::StepRecord r;
    r.run_id = run_id();
    r.key = slot.key;
    r.seq = slot.seq;
    r.kind = std::string(kind);
    r.status = std::string(step_status);
    r.attempts = 1;
    r.started_at = now();
    return r;
}

// The record of a step whose attempt ran from `started` to `ended` (completed, until the
// caller says otherwise), and the attempt's own record with its `outcome`.
std::pair<storage::StepRecord, storage::AttemptRecord> Execution::step_written(
    const Slot& slot, int attempt, std::int64_t first_started, std::int64_t started,
    std::int64_t ended, const std::string& outcome) const {
    storage::StepRecord rec = record(slot, "step", "completed");
    rec.attempts = attempt;
    rec.started_at = first_started;
    storage::AttemptRecord att{run_id(),          slot.key,    attempt,
                               started,           ended,       outcome,
                               std::nullopt,      dump(logs_), rt_.pool.worker_id(),
                               state_.run.attempt};
    return {std::move(rec), std::move(att)};
}

namespace {
// A parallel branch's attempt number, on the branch's thread (parallel.cpp).
thread_local int branch_attempt = 0;
}  // namespace

void set_branch_attempt(int n) {
    branch_attempt = n;
}

int Execution::attempt() const {
    return std::this_thread::get_id() == thread_ ? current_attempt_ : branch_attempt;
}

std::vector<Context::Recorded> Execution::history() const {
    std::vector<Context::Recorded> out;
    for (const auto& [seq, step] : by_seq_) out.push_back({step->key, step->kind, step->status});
    return out;
}

void Execution::log(std::string_view line) {
    spdlog::info("run {}: {}", run_id(), line);
    // A parallel branch's lines go to the process log only: logs_ is this thread's.
    if (current_attempt_ != 0 && std::this_thread::get_id() == thread_)
        logs_.push_back(std::string(line));
}

// ---- endings ------------------------------------------------------------------------------

void Execution::complete_parent(Transaction& tx, const std::optional<std::string>& output,
                                const std::optional<std::string>& error) {
    if (!state_.run.parent_run_id || !state_.run.parent_step_key) return;
    rt_.store.complete_waiting_step(tx, *state_.run.parent_run_id, *state_.run.parent_step_key,
                                    output, error, now());
    rt_.store.notify(tx);
}

// The end of a run with no parent to tell nor handler to start: a record, batched with
// other runs' records (and carrying the last step's).
void Execution::finish_plain(std::string_view final_status, std::optional<std::string> output,
                             std::optional<std::string> error) {
    const storage::RunEnd end{std::string(final_status), std::move(output), std::move(error),
                              now()};
    storage::RunWrite w{&held_.lease, nullptr, nullptr, &end};
    if (unwritten_) {
        w.step = &unwritten_->step;
        w.attempt = &unwritten_->attempt;
    }
    rt_.writer.record(w);
    if (unwritten_) recorded();
    unwritten_.reset();
}

void Execution::finish_completed(const json& output) {
    const std::string text = dump(output);
    if (!state_.run.parent_run_id && !wf_.on_end)
        return finish_plain(run_status::kCompleted, text, {});
    flush();
    fenced(
        [&](Transaction& tx) {
            if (!rt_.store.finish_run(tx, held_.lease, run_status::kCompleted, text, std::nullopt,
                                      now()))
                return;  // cancelled meanwhile: its cancel announced the end
            complete_parent(tx, text, std::nullopt);
            announce_end(tx, run_status::kCompleted, output, nullptr);
        },
        true);
    rt_.pool.wake_local();
}

void Execution::finish_failed(json error) {
    const std::string text = dump(error);
    if (!state_.run.parent_run_id && !wf_.on_failure && !wf_.on_end)
        return finish_plain(run_status::kFailed, {}, text);
    flush();
    fenced(
        [&](Transaction& tx) {
            if (!rt_.store.finish_run(tx, held_.lease, run_status::kFailed, std::nullopt, text,
                                      now()))
                return;
            complete_parent(tx, std::nullopt, text);
            announce_end(tx, run_status::kFailed, nullptr, error);
            if (wf_.on_failure) {
                // The handler is a workflow of its own (Registry::add), started by this event.
                storage::NewEvent e;
                e.name = "cairn/run.failed";
                e.data = dump(json{{"run_id", run_id()},
                                   {"workflow_id", wf_.id},
                                   {"error", error},
                                   {"event", event_}});
                e.idempotency_key = fmt::format("{}/on-failure", run_id());
                storage::NewRun handler;
                handler.workflow_id = wf_.id + "/on-failure";
                handler.version = wf_.version;
                rt_.store.insert_event(tx, e, std::span(&handler, 1), now());
            }
        },
        true);
    rt_.pool.announce();
}

void Execution::announce_end(Transaction& tx, std::string_view status, const json& output,
                             const json& error) {
    if (wf_.on_end)
        rt_.intake.announce_end(tx, wf_,
                                RunEnded{run_id(), std::string(status), event_, output, error});
}

// The cancel that set the status announced the end (Intake::cancel).
void Execution::finish_cancelled() {
    flush();
    fenced(
        [&](Transaction& tx) {
            rt_.store.finish_run(tx, held_.lease, run_status::kCancelled, std::nullopt,
                                 std::nullopt, now());
            complete_parent(tx, std::nullopt,
                            dump(error_json("cancelled", "the invoked run was cancelled")));
        },
        true);
}

const json& Execution::events() {
    if (!events_) {
        json out = json::array();
        if (wf_.flow.batch) {
            for (const auto& e : rt_.flow.store().batch_events(state_.run.id))
                out.push_back(event_json(e));
        }
        if (out.empty()) out.push_back(event_);
        events_ = std::move(out);
    }
    return *events_;
}

}  // namespace cairn::engine::detail
