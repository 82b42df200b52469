#include "engine/detail/registry.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <mutex>
#include <set>
#include <stdexcept>

#include "engine/cron.hpp"
#include "engine/detail/flow.hpp"
#include "engine/expression.hpp"

namespace cairn::engine::detail {

void Registry::check(const Workflow& w) const {
    if (w.id.empty()) throw std::invalid_argument("workflow id must not be empty");
    if (!w.fn) throw std::invalid_argument(fmt::format("workflow '{}' has no function", w.id));
    if (w.retry.max_attempts < 1)
        throw std::invalid_argument(fmt::format("workflow '{}': max_attempts must be >= 1", w.id));
    if (w.cron) {
        try {
            CronSchedule::parse(*w.cron);
        } catch (const std::invalid_argument& e) {
            throw std::invalid_argument(fmt::format("workflow '{}': {}", w.id, e.what()));
        }
    }
    Flow::check(w);
    for (const CancelOn& c : w.cancel_on) {
        if (c.event.empty())
            throw std::invalid_argument(
                fmt::format("workflow '{}': cancel_on needs an event name", w.id));
        if (c.timeout && c.timeout->count() <= 0)
            throw std::invalid_argument(
                fmt::format("workflow '{}': cancel_on's timeout must be positive", w.id));
        if (!c.expression.empty()) {
            try {
                Expression::parse(c.expression);
            } catch (const ExpressionError& e) {
                throw std::invalid_argument(
                    fmt::format("workflow '{}': cancel_on: {}", w.id, e.what()));
            }
        }
    }
}

void Registry::insert(std::unique_ptr<Workflow> w) {
    if (w->flow.any()) any_flow_ = true;
    if (w->on_failure) {
        // Its own durable run, started by the event "cairn/run.failed" (Execution).
        auto handler = std::make_unique<Workflow>();
        handler->id = w->id + "/on-failure";
        handler->version = w->version;
        handler->retry = w->retry;
        handler->fn = w->on_failure;
        workflows_.emplace(handler->id, std::move(handler));
    }
    std::string id = w->id;
    workflows_.emplace(std::move(id), std::move(w));
}

void Registry::add_triggers(const Workflow& w) {
    for (const auto& t : w.triggers) {
        auto& ids = triggers_[t];
        if (ids.empty() && t.ends_with('*')) wildcards_.push_back(t);
        ids.push_back(w.id);
    }
}

void Registry::rebuild_triggers() {
    triggers_.clear();
    wildcards_.clear();
    for (const auto& [id, w] : workflows_) add_triggers(*w);
}

void Registry::add(Workflow w) {
    std::unique_lock lock(mu_);
    check(w);
    if (workflows_.contains(w.id))
        throw std::invalid_argument(fmt::format("workflow '{}' is registered twice", w.id));
    add_triggers(w);
    insert(std::make_unique<Workflow>(std::move(w)));
}

std::vector<std::string> Registry::replace_group(const std::string& group,
                                                 std::vector<Workflow> ws) {
    std::unique_lock lock(mu_);
    std::set<std::string> old;
    if (auto it = groups_.find(group); it != groups_.end())
        old.insert(it->second.begin(), it->second.end());
    std::set<std::string> ids;
    for (const Workflow& w : ws) {
        check(w);
        if (!ids.insert(w.id).second || (workflows_.contains(w.id) && !old.contains(w.id)))
            throw std::invalid_argument(fmt::format("workflow '{}' is registered twice", w.id));
    }
    std::vector<std::string> gone;
    for (const std::string& id : old) {
        for (const std::string& key : {id, id + "/on-failure"}) {
            auto node = workflows_.extract(key);
            if (!node.empty()) retired_.push_back(std::move(node.mapped()));
        }
        if (!ids.contains(id)) gone.push_back(id);
    }
    std::vector<std::string>& members = groups_[group];
    members.clear();
    for (Workflow& w : ws) {
        members.push_back(w.id);
        insert(std::make_unique<Workflow>(std::move(w)));
    }
    if (members.empty()) groups_.erase(group);
    rebuild_triggers();
    return gone;
}

const Workflow* Registry::find(std::string_view id) const {
    std::shared_lock lock(mu_);
    auto it = workflows_.find(id);
    return it == workflows_.end() ? nullptr : it->second.get();
}

std::vector<const Workflow*> Registry::all() const {
    std::shared_lock lock(mu_);
    std::vector<const Workflow*> out;
    for (const auto& [id, w] : workflows_) out.push_back(w.get());
    return out;
}

std::vector<storage::NewRun> Registry::triggered(std::string_view name,
                                                 const std::function<json()>& event) const {
    std::shared_lock lock(mu_);
    std::vector<const std::string*> ids;  // each workflow once, exact triggers first
    auto take = [&](std::string_view trigger) {
        const auto it = triggers_.find(trigger);
        if (it == triggers_.end()) return;
        for (const auto& id : it->second) {
            if (std::none_of(ids.begin(), ids.end(), [&](const auto* x) { return *x == id; }))
                ids.push_back(&id);
        }
    };
    take(name);
    for (const auto& w : wildcards_) {
        if (trigger_matches(w, name)) take(w);
    }
    std::vector<storage::NewRun> runs;
    std::optional<json> built;
    for (const std::string* id : ids) {
        const Workflow& w = *workflows_.at(*id);
        if (w.filter && event) {
            if (!built) built = event();
            if (!w.filter(*built)) continue;
        }
        storage::NewRun run;
        run.workflow_id = *id;
        run.version = w.version;
        runs.push_back(std::move(run));
    }
    return runs;
}

}  // namespace cairn::engine::detail
