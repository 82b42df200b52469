#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "cairn/workflow.hpp"
#include "storage/records.hpp"

namespace cairn::engine::detail {

// The workflows this process runs and the events that start them: those added before the
// engine starts, and groups (an SDK app's functions) replaced whole at any time.
// Thread-safe. A Workflow it hands out stays valid for the registry's life: one that a
// group's replacement drops is kept (not run), as executions may still hold it.
class Registry {
  public:
    // Throws std::invalid_argument for an empty or duplicate id, a missing function, a
    // retry policy of no attempts, a malformed cron or cancel_on expression.
    void add(Workflow w);
    // Replaces the workflows of `group` with `ws` (validated as add does, all or none);
    // returns the ids it no longer has.
    std::vector<std::string> replace_group(const std::string& group, std::vector<Workflow> ws);
    const Workflow* find(std::string_view id) const;
    // Whether any workflow added so far has flow control.
    bool any_flow() const { return any_flow_.load(); }
    std::vector<const Workflow*> all() const;
    // A run of each workflow that an event named `name` starts (by an exact trigger or a
    // wildcard, trigger_matches); `event` builds the event ({id, name, data, ts}) for the
    // workflows with a filter.
    std::vector<storage::NewRun> triggered(std::string_view name,
                                           const std::function<json()>& event = {}) const;

  private:
    void check(const Workflow& w) const;       // mu_ held
    void insert(std::unique_ptr<Workflow> w);  // mu_ held exclusively
    void add_triggers(const Workflow& w);      // mu_ held exclusively
    void rebuild_triggers();                   // mu_ held exclusively

    std::atomic<bool> any_flow_{false};
    mutable std::shared_mutex mu_;
    std::map<std::string, std::unique_ptr<Workflow>, std::less<>> workflows_;
    std::map<std::string, std::vector<std::string>, std::less<>> triggers_;  // event -> ids
    std::vector<std::string> wildcards_;  // the keys of triggers_ ending in '*'
    std::map<std::string, std::vector<std::string>, std::less<>> groups_;  // group -> ids
    std::vector<std::unique_ptr<Workflow>> retired_;  // dropped by a replacement
};

}  // namespace cairn::engine::detail
