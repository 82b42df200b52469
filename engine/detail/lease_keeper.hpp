#pragma once

#include <chrono>

#include "common/periodic.hpp"
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

  private:
    void renew_all();

    WorkerPool& pool_;
    storage::RunStore& store_;
    const Clock& clock_;
    const std::chrono::milliseconds lease_;
    Periodic thread_;  // last: started once the rest is set
};

}  // namespace cairn::engine::detail
