#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "storage/database.hpp"
#include "storage/records.hpp"

namespace cairn::storage {

// A run started under flow control (FlowStore::add_run).
struct FlowRun {
    NewRun run;
    // When it may start: now, or shifted by its priority, a debounce or a batch's timeout.
    std::int64_t start_at = 0;
    // Whether it starts through admission (concurrency, throttle, debounce, batching);
    // otherwise its item is simply due at start_at.
    bool admit = false;
    // Its concurrency keys (FlowStore key text), the first the lesser; every execution
    // takes a slot on each.
    std::optional<std::string> conc1, conc2;
    // What admission checks at the start only (JSON text: {"throttle": key}).
    std::optional<std::string> flow;
    // Why it waits until admitted ("debounce", "batch"), for display.
    std::optional<std::string> held;
};

// A queue item waiting for admission (FlowStore::pending).
struct PendingItem {
    std::string run_id;
    std::string workflow_id;
    std::optional<std::string> conc1, conc2, flow;
    std::int64_t admit_at = 0;
    bool ended = false;  // its run ended (cancelled) while it waited
};

// The state of one key (flow_state): slots in use or events in a batch (n), a theoretical
// arrival time or a window's end or a batch's first event (at), the pending run.
struct KeyState {
    std::int64_t n = 0;
    std::optional<std::int64_t> at;
    std::optional<std::string> run_id;
    std::optional<std::string> times;  // JSON array of epoch ms
};

// Why a queued run waits: FlowStore::held.
struct HeldItem {
    std::string reason;                    // concurrency, throttle, debounce, batch
    std::optional<std::string> key;        // concurrency: the key it is parked on
    std::optional<std::int64_t> admit_at;  // throttle, debounce, batch: when it is due
    std::int64_t in_use = 0;               // concurrency: slots in use on its key
    std::int64_t batch_size = 0;           // batch: events so far
};

// Unfinished queue items of a workflow for one reason (FlowStore::queue_depths).
struct QueueDepth {
    std::string workflow_id;
    // running (leased), due (now), scheduled (later: sleeping, waiting, backing off), or
    // held back: admission, concurrency, throttle, debounce, batch
    std::string reason;
    std::int64_t items = 0;
};

struct SkippedStart {
    std::string event_id;
    std::string workflow_id;
    std::string reason;
    std::int64_t at = 0;
};

// The tables of flow control (docs/flow-control.md): runs started through admission, the
// state of each key, batches' events and skipped starts. The rules live in the engine
// (engine/flow.cpp); this is their storage. Every call runs in the caller's transaction
// unless it takes none.
class FlowStore {
  public:
    explicit FlowStore(Database& db) : db_(db) {}

    // Inserts the run (queued) and its queue item for the event; returns its id.
    std::string add_run(Transaction& tx, const std::string& event_id, const FlowRun& run,
                        std::int64_t now);

    // The state of `key`, its row locked until the transaction ends (created empty).
    KeyState lock(Transaction& tx, const std::string& key);
    void put(Transaction& tx, const std::string& key, const KeyState& state);
    // The same for several keys in one statement each: locked in the map's order.
    void lock(Transaction& tx, std::map<std::string, KeyState>& keys);
    void put(Transaction& tx, const std::map<std::string, KeyState>& keys);

    // Records that the event started no run of the workflow, and why.
    void skip(Transaction& tx, const std::string& event_id, const std::string& workflow_id,
              std::string_view reason, std::int64_t now);
    // The skipped starts of each of the events (one statement), by event id.
    std::map<std::string, std::vector<SkippedStart>> skips(std::span<const std::string> event_ids);

    // Locks the item of a run waiting as `held` (debounce, batch) and returns whether it
    // still waits so: false once admitted (or its run ended).
    bool still_held(Transaction& tx, const std::string& run_id, std::string_view held);
    // Debounce: the run starts with this event instead, at `admit_at`.
    void retarget(Transaction& tx, const std::string& run_id, const std::string& event_id,
                  std::int64_t admit_at, std::int64_t now);
    // Batching: adds the event as the batch's `seq`-th (0 = the run's own event).
    void add_to_batch(Transaction& tx, const std::string& run_id, std::int64_t seq,
                      const std::string& event_id);
    void admit_at(Transaction& tx, const std::string& run_id, std::int64_t at);
    // A batch run's events, in order (empty for a run that is no batch).
    std::vector<EventRecord> batch_events(const std::string& run_id);

    // ---- admission -----------------------------------------------------------------------

    // Up to `limit` items due for admission at `now` of the workflows in `workflows` (a
    // RunStore::claim_set value), oldest first, locked (Postgres: skipping locked ones).
    std::vector<PendingItem> pending(Transaction& tx, std::int64_t now, int limit,
                                     const Value& workflows);
    // The earliest admission time of those workflows' items, and whether slots were
    // released since admission last took the releases.
    struct AdmissionDue {
        std::optional<std::int64_t> next_at;
        bool releases = false;
    };
    AdmissionDue admission_due(const Value& workflows);
    // Takes up to `limit` slot releases (the queue's trigger writes one per key a run's
    // execution held), oldest first: the keys, one per slot (Postgres: skipping those
    // another admission is taking).
    std::vector<std::string> take_releases(Transaction& tx, int limit);
    // Admitted: due now (claimable), holding slots when they have concurrency keys.
    void admit(Transaction& tx, std::span<const std::string> run_ids, std::int64_t now);
    // Waits on `key` until a slot on it frees (the release trigger promotes it).
    void park(Transaction& tx, const std::string& run_id, const std::string& key);
    // Admitted no sooner than `at`, its turn reserved (throttled): then no longer checked
    // against the throttle.
    void defer(Transaction& tx, const std::string& run_id, std::int64_t at, std::string_view held);
    // Its run ended: out of admission.
    void drop(Transaction& tx, const std::string& run_id);
    // Sends the oldest item parked on `key` back to admission; false when none.
    bool promote(Transaction& tx, const std::string& key);
    // The same for each of `keys` (distinct) in one statement; how many it sent back.
    std::int64_t promote(Transaction& tx, std::span<const std::string> keys);

    // ---- reads ---------------------------------------------------------------------------

    std::optional<HeldItem> held(const std::string& run_id);
    // Unfinished queue items by workflow and reason (the queue's depth).
    std::vector<QueueDepth> queue_depths(std::int64_t now);

  private:
    Database& db_;
};

}  // namespace cairn::storage
