#include "engine/detail/lease_keeper.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace cairn::engine::detail {

LeaseKeeper::LeaseKeeper(WorkerPool& pool, storage::RunStore& store, const Clock& clock,
                         std::chrono::milliseconds lease)
    : pool_(pool),
      store_(store),
      clock_(clock),
      lease_(lease),
      thread_("cairn-keeper", std::max(std::chrono::milliseconds(10), lease / 3),
              [this] { renew_all(); }) {}

void LeaseKeeper::renew_all() {
    for (Held& h : pool_.held()) {
        try {
            if (!store_.renew(h.lease, clock_.now_ms(), lease_.count())) h.lost->store(true);
        } catch (const std::exception& e) {
            spdlog::warn("lease renewal for run {} failed: {}", h.lease.run_id, e.what());
        }
    }
}

}  // namespace cairn::engine::detail
