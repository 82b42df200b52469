// Context::parallel: steps that run at once, each on a thread of its own, each recorded
// (and retried) as the step it is.

#include <fmt/format.h>

#include <future>
#include <set>

#include "engine/detail/execution.hpp"
#include "engine/detail/json_text.hpp"
#include "engine/detail/signals.hpp"

namespace cairn::engine::detail {

using std::chrono::milliseconds;

namespace {

// One branch's attempt: what it returned or how it failed.
struct BranchAttempt {
    bool run = false;  // due now (not completed, failed or waiting for its retry)
    int number = 1;
    std::int64_t first_started = 0;
    std::int64_t started = 0;
    std::int64_t ended = 0;
    json out;
    std::optional<json> error;
    bool retriable = true;
    std::optional<milliseconds> retry_after;
};

}  // namespace

json Execution::parallel(std::span<const std::pair<std::string, std::function<json()>>> branches,
                         const StepOptions& options) {
    std::set<std::string_view> names;
    for (const auto& [name, fn] : branches) {
        if (!names.insert(name).second)
            throw std::invalid_argument(
                fmt::format("parallel: the branch name '{}' is given twice", name));
    }
    const RetryPolicy policy = options.retry.value_or(wf_.retry);
    const auto timeout = options.timeout ? options.timeout : wf_.step_timeout;
    std::vector<Slot> slots;
    for (const auto& [name, fn] : branches) slots.push_back(next(name, "step"));

    json results = json::object();
    std::optional<std::pair<std::string, json>> failed;  // the first branch that failed
    std::optional<std::int64_t> wake;                    // the earliest retry not yet due
    std::vector<BranchAttempt> attempts(branches.size());
    bool any_due = false;
    for (std::size_t i = 0; i < branches.size(); ++i) {
        const storage::StepRecord* s = slots[i].stored;
        BranchAttempt& a = attempts[i];
        if (s != nullptr && s->status == "completed") {
            results[branches[i].first] = parse_or_null(s->output);
        } else if (s != nullptr && s->status == "failed") {
            if (!failed) failed.emplace(slots[i].key, parse_or_null(s->error));
        } else if (s != nullptr && s->wake_at && now() < *s->wake_at) {
            wake = std::min(wake.value_or(*s->wake_at), *s->wake_at);
        } else {
            a.run = any_due = true;
            if (s != nullptr) {
                a.number = static_cast<int>(s->attempts) + 1;
                a.first_started = s->started_at.value_or(0);
            }
        }
    }
    if (any_due) {
        boundary();
        // Each due branch on a thread of its own; the workflow's thread waits for all.
        std::vector<std::future<void>> running;
        for (std::size_t i = 0; i < branches.size(); ++i) {
            BranchAttempt& a = attempts[i];
            if (!a.run) continue;
            running.push_back(std::async(std::launch::async, [this, &a, &fn = branches[i].second] {
                a.started = now();
                set_branch_attempt(a.number);
                try {
                    a.out = fn();
                } catch (...) {
                    Failure f = failure_of(std::current_exception());
                    a.error = std::move(f.error);
                    a.retriable = f.retriable;
                    a.retry_after = f.after;
                }
                a.ended = now();
            }));
        }
        for (auto& r : running) r.wait();
    }
    for (std::size_t i = 0; i < branches.size(); ++i) {
        BranchAttempt& a = attempts[i];
        if (!a.run) continue;
        ++rt_.counters.steps_run;
        rt_.counters.observe_step(wf_.id, a.ended - a.started);
        if (a.first_started == 0) a.first_started = a.started;
        std::string outcome = a.error ? "failed" : "completed";
        if (!a.error && timeout && a.ended - a.started > timeout->count()) {
            a.error = error_json("timeout", fmt::format("step ran {} ms, over its {} ms timeout",
                                                        a.ended - a.started, timeout->count()));
            outcome = "timed_out";
        }
        auto [rec, att] =
            step_written(slots[i], a.number, a.first_started, a.started, a.ended, outcome);
        if (!a.error) {
            rec.output = dump(a.out);
            rec.ended_at = a.ended;
            write(rec, &att);
            results[branches[i].first] = a.out;
            continue;
        }
        json error = std::move(*a.error);
        error["attempt"] = a.number;
        rec.error = att.error = dump(error);
        if (!a.retriable || a.number >= policy.max_attempts) {
            rec.status = "failed";
            rec.ended_at = a.ended;
            write(rec, &att);
            if (!failed) failed.emplace(slots[i].key, std::move(error));
            continue;
        }
        const std::int64_t at =
            a.ended + (a.retry_after ? *a.retry_after : rt_.retry_delay(policy, a.number)).count();
        rec.status = "retrying";
        rec.wake_at = at;
        ++rt_.counters.retries;
        write(rec, &att);
        wake = std::min(wake.value_or(at), at);
    }
    // Branches still to retry hold the run until the first is due; a branch that failed
    // for good surfaces once the others have ended.
    if (wake) {
        suspend(*wake, [&](storage::Transaction& tx) {
            rt_.store.set_run_status(tx, run_id(), storage::run_status::kQueued, now());
        });
    }
    if (failed) throw StepFailed(failed->first, failed->second);
    return results;
}

}  // namespace cairn::engine::detail
