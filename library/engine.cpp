// The public Database and Engine: the engine and storage layers behind a small, stable
// interface (include/cairn/engine.hpp).

#include <algorithm>
#include <stdexcept>

#include "library/impl.hpp"
#include "server/api_keys.hpp"
#include "storage/errors.hpp"
#include "storage/migrations.hpp"
#include "storage/run_store.hpp"

namespace cairn {

Database::Database(const std::string& url) : impl_(std::make_unique<Impl>()) {
    try {
        impl_->db = storage::Database::open(url);
        // The tables the engine and its API need; `cairn serve` adds its plugins' own.
        storage::Migrator(*impl_->db,
                          {storage::run_store_component(), server::api_keys_component()})
            .apply();
    } catch (const storage::ConfigError& e) {
        throw std::runtime_error(e.what());
    } catch (const storage::StorageError& e) {
        throw std::runtime_error(e.what());
    }
    impl_->clock = std::make_unique<engine::DatabaseClock>(*impl_->db, impl_->local_clock);
}

Database::~Database() = default;

std::string Database::backend() const {
    return std::string(storage::to_string(impl_->db->backend()));
}

std::string Database::url() const {
    return impl_->db->url();
}

namespace {

RunInfo run_info(const storage::RunRecord& r) {
    auto parse = [](const std::optional<std::string>& text) {
        return text ? nlohmann::json::parse(*text, nullptr, false) : nlohmann::json();
    };
    return RunInfo{r.id,           r.workflow_id, r.status,  parse(r.output),
                   parse(r.error), r.created_at,  r.ended_at};
}

bool ended(const RunInfo& r) {
    return r.status == "completed" || r.status == "failed" || r.status == "cancelled";
}

}  // namespace

Engine::Engine(Database& db, std::string name)
    // Not make_unique: the engine is built in place (it cannot move).
    : impl_(new Impl{*db.impl_, std::move(name), engine::Engine(*db.impl_->db, *db.impl_->clock)}) {
}

Engine::~Engine() = default;  // the engine's destructor stops its workers

void Engine::add(Workflow workflow) {
    impl_->engine.add(std::move(workflow));
}

SendResult Engine::send(const EventInput& event) {
    return impl_->engine.send(event);
}

void Engine::start(WorkerOptions options) {
    if (options.process_name == WorkerOptions{}.process_name) options.process_name = impl_->name;
    impl_->engine.start(std::move(options));
}

void Engine::stop() {
    impl_->engine.stop();
}

int Engine::run_until_idle() {
    return impl_->engine.run_until_idle();
}

std::optional<RunInfo> Engine::run(std::string_view run_id) {
    auto r = impl_->engine.store().get_run(run_id);
    if (!r) return std::nullopt;
    return run_info(*r);
}

std::optional<RunInfo> Engine::wait(std::string_view run_id, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        // Read the count first: a run ending between the read of the run and the wait
        // below then ends the wait at once.
        const std::int64_t seen = impl_->engine.stats().runs_ended;
        auto r = run(run_id);
        const auto now = std::chrono::steady_clock::now();
        if (!r || ended(*r) || now >= deadline) return r;
        // Runs ended by this process wake the wait; another process's only by the poll.
        impl_->engine.await_runs_ended(
            seen, std::min<std::chrono::milliseconds>(
                      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now),
                      std::chrono::milliseconds(200)));
    }
}

bool Engine::cancel(std::string_view run_id) {
    return impl_->engine.cancel(run_id);
}

RetryResult Engine::retry(std::string_view run_id) {
    switch (impl_->engine.retry(run_id)) {
        case storage::RunStore::RetryResult::ok:
            return RetryResult::ok;
        case storage::RunStore::RetryResult::not_found:
            return RetryResult::not_found;
        case storage::RunStore::RetryResult::not_ended:
            break;
    }
    return RetryResult::not_ended;
}

bool Engine::pause(std::string_view workflow_id) {
    return impl_->engine.pause(workflow_id);
}

bool Engine::resume(std::string_view workflow_id) {
    return impl_->engine.resume(workflow_id);
}

std::string Engine::replay(std::string_view run_id, const std::optional<std::string>& from_step) {
    auto r = impl_->engine.replay(run_id, from_step);
    if (const auto* id = std::get_if<std::string>(&r)) return *id;
    if (std::get<storage::RunStore::ReplayError>(r) == storage::RunStore::ReplayError::not_found)
        throw std::invalid_argument("no run " + std::string(run_id));
    throw std::invalid_argument("run " + std::string(run_id) + " has no step " +
                                from_step.value_or(""));
}

}  // namespace cairn
