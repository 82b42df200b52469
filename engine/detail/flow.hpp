#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "cairn/workflow.hpp"
#include "engine/detail/registry.hpp"
#include "storage/database.hpp"
#include "storage/flow_store.hpp"
#include "storage/run_store.hpp"

namespace cairn::engine::detail {

// The rules of flow control (docs/flow-control.md) over storage::FlowStore. Each key's
// state is a row locked by the transaction that decides on it, so processes sharing the
// database decide one at a time per key. Thread-safe.
class Flow {
  public:
    Flow(storage::Database& db, storage::RunStore& store, const Registry& registry);

    // Whether a run of `w` starts through Flow::start rather than with its event's insert.
    static bool controls(const Workflow& w) { return w.flow.any(); }
    // Throws std::invalid_argument for a malformed key or priority expression or a limit,
    // period or size out of range.
    static void check(const Workflow& w);

    // Starts a run of `w` for the event `ev` ({id, name, data, ts}), written in `tx`: the
    // run it starts, or joins (debounce, batch; created false), or nullopt when a rate
    // limit, singleton or idempotency key skips it (recorded on the event). `cancel`
    // cancels a run (a singleton's cancel mode).
    struct Started {
        std::string run_id;
        bool created = true;
    };
    std::optional<Started> start(storage::Transaction& tx, const Workflow& w,
                                 const storage::NewRun& run, const json& ev, std::int64_t now,
                                 const std::function<void(const std::string&)>& cancel);

    struct Admitted {
        int admitted = 0;
        std::optional<std::int64_t> next_at;  // the next item due for admission later
    };
    // Admits up to `limit` items due at `now` of the workflows this process claims: each
    // takes its slots and is due now, or parks on a full key, or waits for its throttle.
    Admitted admit(std::int64_t now, int limit);

    // Why a queued run is held back ("queued: concurrency 2/2 for customer_id=42"), or
    // nullopt when it is not.
    struct HeldBack {
        std::string reason;   // concurrency, throttle, debounce, batch, admission
        std::string message;  // as listings show it
        std::optional<std::int64_t> until;
    };
    // `flow` is the run's workflow's (null when unknown).
    std::optional<HeldBack> held_back(const std::string& run_id, const FlowControl* flow);

    storage::FlowStore& store() { return flows_; }

  private:
    // One transaction of admit(): takes the slot releases, then admits up to `limit` items;
    // true when another pass may admit more (it sent parked items back to admission, or
    // parked or deferred some of a full page).
    bool admit_once(std::int64_t now, int limit, const storage::Value& workflows, Admitted& out);

    storage::Database& db_;
    storage::RunStore& runs_;
    storage::FlowStore flows_;
    const Registry& registry_;
};

// GCRA (the generic cell rate algorithm): one conforming start every `interval` ms, `tolerance`
// ms early at most. Given the key's theoretical arrival time `tat` (none: idle), when a start
// is allowed, and the new tat once it starts then.
struct Gcra {
    std::int64_t allowed_at;
    std::int64_t next_tat;
};
Gcra gcra(std::optional<std::int64_t> tat, std::int64_t now, std::int64_t interval,
          std::int64_t tolerance);

}  // namespace cairn::engine::detail
