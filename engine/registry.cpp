#include "engine/detail/registry.hpp"

#include <fmt/format.h>

#include <stdexcept>

#include "engine/cron.hpp"

namespace cairn::engine::detail {

void Registry::add(Workflow w) {
    if (w.id.empty()) throw std::invalid_argument("workflow id must not be empty");
    if (!w.fn) throw std::invalid_argument(fmt::format("workflow '{}' has no function", w.id));
    if (workflows_.contains(w.id))
        throw std::invalid_argument(fmt::format("workflow '{}' is registered twice", w.id));
    if (w.retry.max_attempts < 1)
        throw std::invalid_argument(fmt::format("workflow '{}': max_attempts must be >= 1", w.id));
    if (w.cron) {
        try {
            CronSchedule::parse(*w.cron);
        } catch (const std::invalid_argument& e) {
            throw std::invalid_argument(fmt::format("workflow '{}': {}", w.id, e.what()));
        }
    }
    for (const CancelOn& c : w.cancel_on) {
        if (c.event.empty())
            throw std::invalid_argument(
                fmt::format("workflow '{}': cancel_on needs an event name", w.id));
        if (c.timeout && c.timeout->count() <= 0)
            throw std::invalid_argument(
                fmt::format("workflow '{}': cancel_on's timeout must be positive", w.id));
    }
    for (const auto& t : w.triggers) triggers_[t].push_back(w.id);
    if (w.on_failure) {
        // Its own durable run, started by the event "cairn/run.failed" (Execution).
        Workflow handler;
        handler.id = w.id + "/on-failure";
        handler.version = w.version;
        handler.retry = w.retry;
        handler.fn = w.on_failure;
        workflows_.emplace(handler.id, std::move(handler));
    }
    workflows_.emplace(w.id, std::move(w));
}

const Workflow* Registry::find(std::string_view id) const {
    auto it = workflows_.find(id);
    return it == workflows_.end() ? nullptr : &it->second;
}

std::vector<const Workflow*> Registry::all() const {
    std::vector<const Workflow*> out;
    for (const auto& [id, w] : workflows_) out.push_back(&w);
    return out;
}

std::size_t Registry::triggered_count(std::string_view name) const {
    const auto it = triggers_.find(name);
    return it == triggers_.end() ? 0 : it->second.size();
}

std::vector<storage::NewRun> Registry::triggered(std::string_view name) const {
    std::vector<storage::NewRun> runs;
    if (auto it = triggers_.find(name); it != triggers_.end()) {
        for (const auto& id : it->second) {
            storage::NewRun run;
            run.workflow_id = id;
            run.version = workflows_.at(id).version;
            runs.push_back(std::move(run));
        }
    }
    return runs;
}

}  // namespace cairn::engine::detail
