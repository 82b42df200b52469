#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "engine/clock.hpp"
#include "engine/detail/worker_pool.hpp"
#include "storage/run_store.hpp"

namespace cairn::engine::detail {

// Renews the lease of every run the pool holds, every lease/3, from a thread of its own,
// and marks a run whose lease is gone as lost so its execution stops at the next step
// boundary.
class LeaseKeeper {
  public:
    LeaseKeeper(WorkerPool& pool, storage::RunStore& store, const Clock& clock,
                std::chrono::milliseconds lease);
    ~LeaseKeeper();
    LeaseKeeper(const LeaseKeeper&) = delete;
    LeaseKeeper& operator=(const LeaseKeeper&) = delete;

  private:
    void loop();

    WorkerPool& pool_;
    storage::RunStore& store_;
    const Clock& clock_;
    const std::chrono::milliseconds lease_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool stop_ = false;  // guarded by mu_
    std::thread thread_;
};

}  // namespace cairn::engine::detail
