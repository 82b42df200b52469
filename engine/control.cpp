// Operating runs and workflows: cancel, retry and replay of one run or of every run a
// filter matches, and pausing a workflow.

#include "engine/detail/json_text.hpp"
#include "engine/detail/runtime.hpp"
#include "engine/engine.hpp"

namespace cairn::engine {

bool Engine::cancel(std::string_view run_id) {
    const bool cancelled =
        rt_->db.transact([&](storage::Transaction& tx) { return rt_->intake.cancel(tx, run_id); });
    if (cancelled) rt_->pool.wake_local();  // a parent here may resume
    return cancelled;
}

storage::RunStore::RetryResult Engine::retry(std::string_view run_id) {
    auto r = rt_->store.retry_run(run_id, rt_->now());
    if (r == storage::RunStore::RetryResult::ok) rt_->pool.wake_local();
    return r;
}

std::variant<std::string, storage::RunStore::ReplayError> Engine::replay(
    std::string_view run_id, const std::optional<std::string>& from_step,
    const std::optional<json>& data) {
    auto run = rt_->store.get_run(run_id);
    if (!run) return storage::RunStore::ReplayError::not_found;
    // The replay runs the code registered now, so it records that version.
    const Workflow* w = find(run->workflow_id);
    auto r = rt_->store.replay_run(run_id, w ? w->version : run->version, from_step, rt_->now(),
                                   data ? std::optional(detail::dump(*data)) : std::nullopt);
    if (std::holds_alternative<std::string>(r)) rt_->pool.wake_local();
    return r;
}

Engine::BulkResult Engine::bulk(BulkOperation op, const storage::RunFilter& filter,
                                const std::function<void(std::int64_t, std::int64_t)>& progress) {
    BulkResult out;
    const std::vector<std::string> ids = rt_->store.match_runs(filter);
    out.matched = static_cast<std::int64_t>(ids.size());
    std::int64_t handled = 0;
    for (const std::string& id : ids) {
        switch (op) {
            case BulkOperation::cancel:
                if (rt_->db.transact(
                        [&](storage::Transaction& tx) { return rt_->intake.cancel(tx, id); }))
                    out.done.push_back(id);
                break;
            case BulkOperation::retry:
                if (rt_->store.retry_run(id, rt_->now()) == storage::RunStore::RetryResult::ok)
                    out.done.push_back(id);
                break;
            case BulkOperation::replay:
                if (auto r = replay(id); auto* new_id = std::get_if<std::string>(&r))
                    out.done.push_back(*new_id);
                break;
        }
        if (++handled % 500 == 0 && progress) progress(handled, out.matched);
    }
    if (!out.done.empty()) rt_->pool.wake_local();
    return out;
}

bool Engine::pause(std::string_view workflow_id) {
    const bool paused = rt_->store.pause_workflow(workflow_id, rt_->now());
    refresh_pauses();
    return paused;
}

bool Engine::resume(std::string_view workflow_id) {
    const bool resumed = rt_->store.resume_workflow(workflow_id);
    refresh_pauses();
    return resumed;
}

}  // namespace cairn::engine
