#pragma once

#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <random>

#include "engine/clock.hpp"
#include "engine/detail/counters.hpp"
#include "engine/detail/flow.hpp"
#include "engine/detail/intake.hpp"
#include "engine/detail/pauses.hpp"
#include "engine/detail/registry.hpp"
#include "engine/detail/worker_pool.hpp"
#include "engine/detail/writer.hpp"
#include "storage/database.hpp"
#include "storage/run_store.hpp"

namespace cairn::engine::detail {

// The parts of one engine, as its executions use them. Members are constant after
// construction and thread-safe, unless noted.
struct Runtime {
    Runtime(storage::Database& database, const Clock& c, std::string worker_id);

    storage::Database& db;
    const Clock& clock;
    storage::RunStore store;
    Registry registry;  // filled before anything is sent or started
    Pauses pauses;
    Counters counters;
    Writer writer;
    WorkerPool pool;
    Flow flow;
    Intake intake;
    // Called after each step record commits: a test seam (a crash after N steps), set
    // before the engine starts.
    std::function<void()> step_recorded;

    std::int64_t now() const { return clock.now_ms(); }
    // The wait after `failed` failed attempts under `policy` (jittered).
    std::chrono::milliseconds retry_delay(const RetryPolicy& policy, int failed);
    // Executes a claimed run: replays its workflow until it ends or suspends.
    void execute(const Held& held, std::optional<storage::RunState> state);

  private:
    std::mutex rng_mu_;
    std::mt19937_64 rng_{std::random_device{}()};  // guarded by rng_mu_
};

}  // namespace cairn::engine::detail
