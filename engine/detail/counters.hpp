#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "common/histogram.hpp"
#include "engine/engine.hpp"

namespace cairn::engine::detail {

// This process's engine counters and step histograms (EngineStats). Thread-safe.
class Counters {
  public:
    std::atomic<std::int64_t> executions{0};
    std::atomic<std::int64_t> steps_run{0};
    std::atomic<std::int64_t> leases_lost{0};
    std::atomic<std::int64_t> retries{0};

    // After the commit that ended a run.
    void ended();
    // Waits until more than `seen` runs ended or `timeout` passes; returns the count.
    std::int64_t await_ended(std::int64_t seen, std::chrono::milliseconds timeout);
    // A step attempt of `workflow_id` that took `ms`.
    void observe_step(const std::string& workflow_id, std::int64_t ms);

    EngineStats snapshot() const;

  private:
    mutable std::mutex ended_mu_;
    std::condition_variable ended_cv_;
    std::int64_t runs_ended_ = 0;  // guarded by ended_mu_
    mutable std::mutex histograms_mu_;
    std::map<std::string, std::unique_ptr<Histogram>> step_seconds_;  // guarded by histograms_mu_
};

}  // namespace cairn::engine::detail
