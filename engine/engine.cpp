// The Engine facade: wires the registry, the intake, the worker pool, the lease keeper
// and executions together (engine/detail/runtime.hpp) and answers the run operations.

#include "engine/engine.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>

#include "common/ids.hpp"
#include "engine/detail/lease_keeper.hpp"
#include "engine/detail/runtime.hpp"

namespace cairn::engine {

namespace {

std::string make_worker_id() {
    char host[256] = {};
    if (gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "host");
    return fmt::format("{}:{}:{}", host, getpid(), new_id().substr(30));
}

}  // namespace

Engine::Engine(storage::Database& db, const Clock& clock)
    : rt_(std::make_unique<detail::Runtime>(db, clock, make_worker_id())) {}

Engine::~Engine() {
    stop();
}

void Engine::add(Workflow w) {
    rt_->registry.add(std::move(w));
}

const Workflow* Engine::find(std::string_view id) const {
    return rt_->registry.find(id);
}

std::vector<const Workflow*> Engine::workflows() const {
    return rt_->registry.all();
}

SendResult Engine::send(storage::Transaction& tx, const EventInput& event) {
    return rt_->intake.send(tx, std::span(&event, 1)).front();
}

std::vector<SendResult> Engine::send(storage::Transaction& tx, std::span<const EventInput> events) {
    return rt_->intake.send(tx, events);
}

SendResult Engine::send(const EventInput& event) {
    return rt_->intake.send(event);
}

bool Engine::cancel(std::string_view run_id) {
    return rt_->store.cancel_run(run_id, rt_->now());
}

storage::RunStore::RetryResult Engine::retry(std::string_view run_id) {
    auto r = rt_->store.retry_run(run_id, rt_->now());
    if (r == storage::RunStore::RetryResult::ok) rt_->pool.wake_local();
    return r;
}

std::variant<std::string, storage::RunStore::ReplayError> Engine::replay(
    std::string_view run_id, const std::optional<std::string>& from_step) {
    auto run = rt_->store.get_run(run_id);
    if (!run) return storage::RunStore::ReplayError::not_found;
    // The replay runs the code registered now, so it records that version.
    const Workflow* w = find(run->workflow_id);
    auto r = rt_->store.replay_run(run_id, w ? w->version : run->version, from_step, rt_->now());
    if (std::holds_alternative<std::string>(r)) rt_->pool.wake_local();
    return r;
}

int Engine::run_until_idle(int max_executions) {
    int count = 0;
    const auto lease_ms = std::max<std::int64_t>(rt_->pool.options().lease.count(), 30'000);
    while (count < max_executions) {
        auto claims = rt_->store.claim_runs(rt_->pool.worker_id(), 16, rt_->now(), lease_ms);
        if (claims.empty()) break;
        for (auto& c : claims) {
            rt_->execute({c.lease, std::make_shared<std::atomic<bool>>(false)}, std::move(c.state));
            ++count;
        }
    }
    return count;
}

void Engine::start(WorkerOptions options) {
    rt_->pool.start(options, [rt = rt_.get()](const detail::Held& held,
                                              std::optional<storage::RunState> state) {
        rt->execute(held, std::move(state));
    });
    keeper_ =
        std::make_unique<detail::LeaseKeeper>(rt_->pool, rt_->store, rt_->clock, options.lease);
    spdlog::info("worker {} started: {} threads, lease {} ms", rt_->pool.worker_id(),
                 options.threads, options.lease.count());
}

void Engine::stop() {
    if (!rt_->pool.running()) return;
    rt_->pool.stop();
    keeper_.reset();
    spdlog::info("worker {} stopped", rt_->pool.worker_id());
}

EngineStats Engine::stats() const {
    return rt_->counters.snapshot();
}

std::int64_t Engine::await_runs_ended(std::int64_t seen, std::chrono::milliseconds timeout) {
    return rt_->counters.await_ended(seen, timeout);
}

storage::RunStore& Engine::store() {
    return rt_->store;
}

const Clock& Engine::clock() const {
    return rt_->clock;
}

const std::string& Engine::worker_id() const {
    return rt_->pool.worker_id();
}

void Engine::on_step_recorded(std::function<void()> fn) {
    rt_->step_recorded = std::move(fn);
}

}  // namespace cairn::engine
