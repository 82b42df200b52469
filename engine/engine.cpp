// The Engine facade: wires the registry, the intake, the worker pool, the lease keeper
// and executions together (engine/detail/runtime.hpp) and answers the run operations.

#include "engine/engine.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <map>
#include <set>

#include "common/ids.hpp"
#include "common/periodic.hpp"
#include "engine/cron.hpp"
#include "engine/detail/lease_keeper.hpp"
#include "engine/detail/runtime.hpp"
#include "engine/detail/scheduler.hpp"

namespace cairn::engine {

namespace {

std::string make_worker_id() {
    char host[256] = {};
    if (gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "host");
    return fmt::format("{}:{}:{}", host, getpid(), new_id().substr(30));
}

// How often a process's row in the processes table is touched, and how long a silent
// one is kept.
constexpr std::chrono::seconds kHeartbeat{10};
constexpr std::int64_t kForgetAfterMs = 24LL * 3600 * 1000;

}  // namespace

json workflow_options(const Workflow& w) {
    return {{"max_attempts", w.retry.max_attempts},
            {"initial_delay_ms", w.retry.initial_delay.count()},
            {"backoff_multiplier", w.retry.multiplier},
            {"max_delay_ms", w.retry.max_delay.count()},
            {"jitter", w.retry.jitter},
            {"step_timeout_ms", w.step_timeout ? json(w.step_timeout->count()) : json(nullptr)},
            {"run_timeout_ms", w.run_timeout ? json(w.run_timeout->count()) : json(nullptr)},
            {"on_failure", static_cast<bool>(w.on_failure)}};
}

namespace {

json cancel_on_json(const Workflow& w) {
    json out = json::array();
    for (const CancelOn& c : w.cancel_on) {
        out.push_back({{"event", c.event},
                       {"match", c.match},
                       {"timeout_ms", c.timeout ? json(c.timeout->count()) : json(nullptr)}});
    }
    return out;
}

}  // namespace

json workflow_description(const Workflow& w) {
    return {{"id", w.id},
            {"version", w.version},
            {"app", w.app.empty() ? json(nullptr) : json(w.app)},
            {"triggers", w.triggers},
            {"cron", w.cron ? json(*w.cron) : json(nullptr)},
            {"cancel_on", cancel_on_json(w)},
            {"flow_control", flow_control_json(w.flow)},
            {"options", workflow_options(w)}};
}

Engine::Engine(storage::Database& db, const Clock& clock)
    : rt_(std::make_unique<detail::Runtime>(db, clock, make_worker_id())),
      scheduler_(std::make_unique<detail::Scheduler>(*rt_)) {
    rt_->store.claim_only({});  // nothing until workflows are added
}

Engine::~Engine() {
    stop();
}

void Engine::add(Workflow w) {
    rt_->registry.add(std::move(w));
    claim_unpaused();
}

std::vector<std::string> Engine::replace_workflows(const std::string& group,
                                                   std::vector<Workflow> ws) {
    auto gone = rt_->registry.replace_group(group, std::move(ws));
    claim_unpaused();
    rt_->pool.wake_local();  // runs of a workflow new here may be waiting
    return gone;
}

// Claims take the workflows added here that are not paused.
void Engine::claim_unpaused() {
    std::vector<std::string> ids;
    for (const Workflow* known : rt_->registry.all()) {
        if (!rt_->pauses.contains(known->id)) ids.push_back(known->id);
    }
    rt_->store.claim_only(ids);
}

void Engine::refresh_pauses() {
    std::set<std::string, std::less<>> paused;
    for (auto& [id, at] : rt_->store.paused_workflows()) paused.insert(id);
    if (rt_->pauses.set(std::move(paused))) {
        claim_unpaused();
        rt_->pool.wake_local();  // a resumed workflow's runs may be due
    }
}

const Workflow* Engine::find(std::string_view id) const {
    return rt_->registry.find(id);
}

std::vector<const Workflow*> Engine::workflows() const {
    return rt_->registry.all();
}

json Engine::workflow_listing() {
    std::map<std::string, json> by_id;
    for (const Workflow* w : workflows()) {
        json d = workflow_description(*w);
        d["local"] = true;
        d["processes"] = json::array();
        by_id.emplace(w->id, std::move(d));
    }
    const std::int64_t live_after = rt_->now() - 3 * std::chrono::milliseconds(kHeartbeat).count();
    for (const auto& p : rt_->store.processes()) {  // most recent first
        const json process = {{"id", p.id},
                              {"name", p.name},
                              {"heartbeat_at", p.heartbeat_at},
                              {"stopped_at", p.stopped_at ? json(*p.stopped_at) : json(nullptr)},
                              {"live", !p.stopped_at && p.heartbeat_at >= live_after}};
        for (const json& w : json::parse(p.workflows, nullptr, false)) {
            if (!w.is_object() || !w.contains("id") || !w["id"].is_string()) continue;
            auto [it, added] = by_id.try_emplace(w["id"].get<std::string>(), w);
            if (added) {
                it->second["local"] = false;
                it->second["processes"] = json::array();
            }
            it->second["processes"].push_back(process);
        }
    }
    const auto paused = rt_->store.paused_workflows();
    const std::int64_t now = rt_->now();
    json out = json::array();
    for (auto& [id, w] : by_id) {
        w["next_tick"] = nullptr;
        if (w.contains("cron") && w["cron"].is_string()) {
            try {
                const auto next = CronSchedule::parse(w["cron"].get<std::string>()).next_after(now);
                if (next) w["next_tick"] = *next;
            } catch (const std::invalid_argument&) {  // another version's syntax: no tick
            }
        }
        const auto p = paused.find(id);
        w["paused"] = p != paused.end();
        w["paused_at"] = p != paused.end() ? json(p->second) : json(nullptr);
        out.push_back(std::move(w));
    }
    return out;
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

// Every 10 minutes, from a thread of its own, in batches that are each a short transaction
// (so workers' writes interleave with it).
void Engine::start_retention(std::chrono::milliseconds retention) {
    static const std::array<std::string, 3> kEnded{"completed", "failed", "cancelled"};
    retention_ = std::make_unique<Periodic>("cairn-retention", std::chrono::minutes(10), [=, this] {
        try {
            const auto done = collect(rt_->now() - retention.count(), kEnded);
            if (done.runs > 0 || done.events > 0)
                spdlog::info("retention: deleted {} runs and {} events older than {} h", done.runs,
                             done.events, retention.count() / 3'600'000);
        } catch (const std::exception& e) {
            spdlog::warn("retention: {}", e.what());
        }
    });
}

storage::RunStore::Collected Engine::collect(
    std::int64_t ended_before, std::span<const std::string> statuses,
    const std::function<void(const storage::RunStore::Collected&)>& progress) {
    storage::RunStore::Collected total;
    for (;;) {
        const auto batch = rt_->store.collect(ended_before, statuses, 500);
        total.runs += batch.runs;
        total.events += batch.events;
        if (batch.runs == 0 && batch.events == 0) return total;
        if (progress) progress(total);
    }
}

json Engine::held_back(const storage::RunRecord& run) {
    if (run.status != storage::run_status::kQueued) return nullptr;
    // The workflow's controls as this process has them, or as the process that runs it
    // described them (the parts a message needs).
    FlowControl described;
    const FlowControl* flow = nullptr;
    if (const Workflow* w = find(run.workflow_id)) {
        flow = &w->flow;
    } else {
        for (const json& d : workflow_listing()) {
            if (d.value("id", "") != run.workflow_id || !d.contains("flow_control") ||
                !d["flow_control"].is_object())
                continue;
            const json& f = d["flow_control"];
            for (const json& c : f.value("concurrency", json::array()))
                described.concurrency.push_back({c.value("limit", 0), c.value("key", "")});
            if (f.contains("batch")) described.batch = Batching{f["batch"].value("max_size", 0)};
            flow = &described;
        }
    }
    const auto h = rt_->flow.held_back(run.id, flow);
    if (!h) return nullptr;
    return {{"reason", h->reason},
            {"message", h->message},
            {"until", h->until ? json(*h->until) : json(nullptr)}};
}

json Engine::skipped_starts(std::span<const std::string> event_ids) {
    json out = json::object();
    for (const auto& [id, skips] : rt_->flow.store().skips(event_ids)) {
        json& list = out[id] = json::array();
        for (const auto& s : skips)
            list.push_back({{"workflow_id", s.workflow_id}, {"reason", s.reason}, {"at", s.at}});
    }
    return out;
}

json Engine::skipped_starts(const std::string& event_id) {
    const json all = skipped_starts(std::span(&event_id, 1));
    return all.contains(event_id) ? all[event_id] : json::array();
}

std::vector<storage::QueueDepth> Engine::queue_depths() {
    return rt_->flow.store().queue_depths(rt_->now());
}

int Engine::fire_schedules() {
    return scheduler_->fire_due();
}

int Engine::run_until_idle(int max_executions) {
    refresh_pauses();
    int count = 0;
    const auto lease_ms = std::max<std::int64_t>(rt_->pool.options().lease.count(), 30'000);
    while (count < max_executions) {
        const int admitted = rt_->flow.admit(rt_->now(), 1000).admitted;
        auto claims = rt_->store.claim_runs(rt_->pool.worker_id(), 16, rt_->now(), lease_ms);
        if (claims.empty() && admitted == 0) break;
        for (auto& c : claims) {
            rt_->execute({c.lease, std::make_shared<std::atomic<bool>>(false)}, std::move(c.state));
            ++count;
        }
    }
    return count;
}

void Engine::start(WorkerOptions options) {
    try {
        refresh_pauses();
    } catch (const std::exception& e) {  // read again within a second
        spdlog::warn("could not read the paused workflows: {}", e.what());
    }
    rt_->pool.set_admission(
        [rt = rt_.get()](std::int64_t now, int limit) {
            return rt->flow.admit(now, limit).next_at;
        },
        [rt = rt_.get()] { return rt->registry.any_flow(); });
    rt_->pool.start(options, [rt = rt_.get()](const detail::Held& held,
                                              std::optional<storage::RunState> state) {
        rt->execute(held, std::move(state));
    });
    keeper_ =
        std::make_unique<detail::LeaseKeeper>(rt_->pool, rt_->store, rt_->clock, options.lease);
    register_process(options.process_name);
    if (options.retention.count() > 0) start_retention(options.retention);
    // Every second: pauses and resumes made by other processes take effect here, and
    // cron ticks (minutes) start within a second of their time.
    control_ = std::make_unique<Periodic>("cairn-control", std::chrono::seconds(1), [this] {
        try {
            refresh_pauses();
            scheduler_->fire_due();
        } catch (const std::exception& e) {
            spdlog::warn("pauses and schedules: {}", e.what());
        }
    });
    spdlog::info("worker {} started: {} threads, lease {} ms", rt_->pool.worker_id(),
                 options.threads, options.lease.count());
}

void Engine::stop() {
    if (!rt_->pool.running()) return;
    rt_->pool.stop();
    keeper_.reset();
    control_.reset();
    heartbeat_.reset();
    retention_.reset();
    try {
        rt_->store.process_stopped(rt_->pool.worker_id(), rt_->now());
    } catch (const std::exception& e) {
        spdlog::warn("could not record this process's stop: {}", e.what());
    }
    spdlog::info("worker {} stopped", rt_->pool.worker_id());
}

// Lists this process and its workflows; the heartbeat rewrites the row should another
// process have forgotten it (after a long pause).
void Engine::register_process(const std::string& name) {
    json described = json::array();
    for (const Workflow* w : rt_->registry.all()) described.push_back(workflow_description(*w));
    const std::int64_t now = rt_->now();
    storage::ProcessRecord row{rt_->pool.worker_id(), name, now, now, std::nullopt,
                               described.dump()};
    auto write = [rt = rt_.get(), row]() mutable {
        try {
            row.heartbeat_at = rt->now();
            if (!rt->store.heartbeat(row.id, row.heartbeat_at))
                rt->store.register_process(row, row.heartbeat_at - kForgetAfterMs);
        } catch (const std::exception& e) {
            spdlog::warn("process heartbeat failed: {}", e.what());
        }
    };
    write();
    heartbeat_ = std::make_unique<Periodic>("cairn-heartbeat", kHeartbeat, write);
}

std::chrono::milliseconds Engine::retention() const {
    return rt_->pool.running() ? rt_->pool.options().retention : std::chrono::milliseconds(0);
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
