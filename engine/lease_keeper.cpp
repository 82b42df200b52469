#include "engine/detail/lease_keeper.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/threads.hpp"

namespace cairn::engine::detail {

LeaseKeeper::LeaseKeeper(WorkerPool& pool, storage::RunStore& store, const Clock& clock,
                         std::chrono::milliseconds lease)
    : pool_(pool), store_(store), clock_(clock), lease_(lease) {
    thread_ = std::thread([this] { loop(); });
}

LeaseKeeper::~LeaseKeeper() {
    {
        std::lock_guard lock(mu_);
        stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
}

void LeaseKeeper::loop() {
    name_this_thread("cairn-keeper");
    const auto every = std::max(std::chrono::milliseconds(10), lease_ / 3);
    std::unique_lock lock(mu_);
    while (!cv_.wait_for(lock, every, [this] { return stop_; })) {
        lock.unlock();
        for (Held& h : pool_.held()) {
            try {
                if (!store_.renew(h.lease, clock_.now_ms(), lease_.count())) h.lost->store(true);
            } catch (const std::exception& e) {
                spdlog::warn("lease renewal for run {} failed: {}", h.lease.run_id, e.what());
            }
        }
        lock.lock();
    }
}

}  // namespace cairn::engine::detail
