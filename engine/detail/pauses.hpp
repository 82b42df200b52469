#pragma once

#include <mutex>
#include <set>
#include <span>
#include <string>

#include "storage/records.hpp"

namespace cairn::engine::detail {

// The paused workflows as this process last read them (Engine refreshes it every second,
// and at once for a pause or resume through it). Thread-safe.
class Pauses {
  public:
    // Replaces the set; true when it changed.
    bool set(std::set<std::string, std::less<>> ids) {
        std::lock_guard lock(mu_);
        if (ids == ids_) return false;
        ids_ = std::move(ids);
        return true;
    }
    bool contains(std::string_view id) const {
        std::lock_guard lock(mu_);
        return ids_.contains(id);
    }
    // Whether any of the runs is of a paused workflow.
    bool any(std::span<const storage::NewRun> runs) const {
        std::lock_guard lock(mu_);
        if (ids_.empty()) return false;
        for (const auto& r : runs) {
            if (ids_.contains(r.workflow_id)) return true;
        }
        return false;
    }

  private:
    mutable std::mutex mu_;
    std::set<std::string, std::less<>> ids_;  // guarded by mu_
};

}  // namespace cairn::engine::detail
