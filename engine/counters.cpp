#include "engine/detail/counters.hpp"

namespace cairn::engine::detail {

void Counters::ended() {
    {
        std::lock_guard lock(ended_mu_);
        ++runs_ended_;
    }
    ended_cv_.notify_all();
}

std::int64_t Counters::await_ended(std::int64_t seen, std::chrono::milliseconds timeout) {
    std::unique_lock lock(ended_mu_);
    ended_cv_.wait_for(lock, timeout, [&] { return runs_ended_ > seen; });
    return runs_ended_;
}

void Counters::observe_step(const std::string& workflow_id, std::int64_t ms) {
    Histogram* h = nullptr;
    {
        std::lock_guard lock(histograms_mu_);
        auto& slot = step_seconds_[workflow_id];
        if (!slot) slot = std::make_unique<Histogram>();
        h = slot.get();
    }
    h->observe(static_cast<double>(ms) / 1000.0);  // Histogram is thread-safe
}

EngineStats Counters::snapshot() const {
    EngineStats out;
    out.executions = executions.load();
    out.steps_run = steps_run.load();
    out.leases_lost = leases_lost.load();
    out.retries = retries.load();
    {
        std::lock_guard lock(histograms_mu_);
        for (const auto& [id, h] : step_seconds_) out.step_seconds[id] = h->snapshot();
    }
    std::lock_guard lock(ended_mu_);
    out.runs_ended = runs_ended_;
    return out;
}

}  // namespace cairn::engine::detail
