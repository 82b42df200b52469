#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "cairn/workflow.hpp"
#include "storage/records.hpp"

namespace cairn::engine::detail {

// The workflows this process runs and the events that start them. Filled before the
// engine sends or starts anything, read-only afterwards (so read without a lock).
class Registry {
  public:
    // Throws std::invalid_argument for an empty or duplicate id, a missing function or a
    // retry policy of no attempts.
    void add(Workflow w);
    const Workflow* find(std::string_view id) const;
    std::vector<const Workflow*> all() const;
    // How many workflows, and a run of each, that an event named `name` starts.
    std::size_t triggered_count(std::string_view name) const;
    std::vector<storage::NewRun> triggered(std::string_view name) const;

  private:
    std::map<std::string, Workflow, std::less<>> workflows_;
    std::map<std::string, std::vector<std::string>, std::less<>> triggers_;  // event -> ids
};

}  // namespace cairn::engine::detail
