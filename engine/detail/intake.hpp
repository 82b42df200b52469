#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "engine/clock.hpp"
#include "engine/detail/flow.hpp"
#include "engine/detail/pauses.hpp"
#include "engine/detail/registry.hpp"
#include "engine/detail/worker_pool.hpp"
#include "engine/engine.hpp"
#include "storage/database.hpp"
#include "storage/run_store.hpp"

namespace cairn::engine::detail {

// Event intake (Engine::send): writes an event with a run of every workflow it starts
// and resumes the runs that wait for it, then wakes whoever is to run them once the write
// is durable. While this process's worker threads are idle enough for all of an event's
// runs, the runs are written already claimed by it and handed to those threads after
// the commit: no claim, no state read, no wake-up of the dispatcher. Thread-safe.
class Intake {
  public:
    Intake(storage::Database& db, storage::RunStore& store, const Registry& registry,
           const Pauses& pauses, WorkerPool& pool, Flow& flow, const Clock& clock);
    ~Intake();

    // In the caller's transaction; the wake-up follows its commit (Transaction::on_end).
    std::vector<SendResult> send(storage::Transaction& tx, std::span<const EventInput> in);
    // On its own, through the database's WriteBatcher: sends made at once share a
    // statement (Postgres) or a commit.
    SendResult send(const EventInput& in);

    // Cancels the run and its descendants in `tx` (RunStore::cancel_run), announcing each
    // end (Workflow::on_end); `error` is recorded as the run's. False if it had ended.
    bool cancel(storage::Transaction& tx, std::string_view run_id,
                const std::optional<json>& error = std::nullopt);
    // Sends the events `w` announces a run's end with, in `tx` (none without on_end).
    void announce_end(storage::Transaction& tx, const Workflow& w, const RunEnded& ended);
    // Makes the new run `run_id` of `w` listen for the events that cancel it (cancel_on),
    // matched against its event `ev`; every way a run starts calls it.
    void listen_for_cancel(storage::Transaction& tx, const std::string& run_id, const Workflow& w,
                           const json& ev);

    // One event on its way in.
    struct Sending {
        const EventInput* in = nullptr;  // the caller's, until the send returns
        storage::NewEvent event;
        std::vector<storage::NewRun> runs;
        // Runs of workflows under flow control: started by Flow::start once the event is
        // written (never claimed by the send).
        std::vector<storage::NewRun> flow_runs;
        WorkerPool::Promise promise;
        std::optional<storage::ClaimedBy> claimed;
        SendResult result;
        int cancelled = 0;  // runs its cancel_on listeners cancelled
    };
    // The events of `events` that RunStore::insert_events may write: not those starting a
    // workflow with cancel_on, whose listeners write_one writes, nor a workflow under flow
    // control.
    std::vector<storage::EventWrite*> batchable(std::span<Sending* const> sends,
                                                std::span<storage::EventWrite> events) const;
    // Writes `sends` in `tx`: those RunStore::insert_events takes together, each other one
    // on its own (write_one).
    void write(storage::Transaction& tx, std::span<Sending* const> sends);
    // Writes `s` in `tx`: the event and its runs, and the waits it completes.
    void write_one(storage::Transaction& tx, Sending& s);
    // Sets the results of the sends insert_events wrote; true for each such one.
    std::vector<bool> take_written(std::span<Sending* const> sends,
                                   std::span<const storage::EventWrite> events);
    // The sends as RunStore::insert_events takes them.
    std::vector<storage::EventWrite> event_writes(std::span<Sending* const> sends) const;
    // After the write's transaction ended.
    void deliver(Sending& s, bool committed);
    std::int64_t now() const { return clock_.now_ms(); }
    storage::RunStore& store() { return store_; }

  private:
    std::unique_ptr<Sending> prepare(const EventInput& in);
    // For each new run of a workflow with cancel_on, its listeners.
    void listen_for_cancel(storage::Transaction& tx, const Sending& s,
                           const std::function<const json&()>& event);

    storage::Database& db_;
    storage::RunStore& store_;
    const Registry& registry_;
    const Pauses& pauses_;
    WorkerPool& pool_;
    Flow& flow_;
    const Clock& clock_;
    std::unique_ptr<storage::WriteKind> events_;
};

}  // namespace cairn::engine::detail
