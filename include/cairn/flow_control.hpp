#pragma once

// Part of Cairn's public API (docs/library.md). How much of a workflow may run, how fast
// and in what order (docs/flow-control.md). Every `key` is an expression over the run's
// event (`event.data.customer_id`, `"tenant-" + event.data.tenant`); its value, as text,
// names the key the limit counts by. An empty key counts the whole workflow.

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace cairn {

// At most `limit` runs executing steps at once per key, across every process on the
// database; a run that sleeps, waits or backs off holds no slot.
struct Concurrency {
    int limit = 1;
    std::string key;
};

// Runs start no faster than `limit` per `period` per key, spread evenly (one every
// period / limit); `burst` runs may start together after a quiet spell. Excess runs wait
// their turn, none is dropped.
struct Throttle {
    int limit = 1;
    std::chrono::milliseconds period{1000};
    int burst = 1;
    std::string key;
};

// Events beyond `limit` per `period` for a key start no run (the event records it).
struct RateLimit {
    int limit = 1;
    std::chrono::milliseconds period{1000};
    std::string key;
};

// A run starts `period` after the last event for its key, with that event; `timeout`
// caps how long a stream of events can delay it.
struct Debounce {
    std::chrono::milliseconds period{1000};
    std::string key;
    std::optional<std::chrono::milliseconds> timeout;
};

// One run receives up to `max_size` events (Context::events), starting when the batch is
// full or `timeout` after its first event.
struct Batching {
    int max_size = 10;
    std::chrono::milliseconds timeout{1000};
    std::string key;
};

// At most one unfinished run per key: a new event starts nothing (skip) or cancels the
// unfinished run and starts (cancel).
struct Singleton {
    enum class Mode { skip, cancel };
    std::string key;
    Mode mode = Mode::skip;
};

// One run per key value per `window`; later events within it start nothing.
struct Idempotency {
    std::string key;
    std::chrono::milliseconds window{std::chrono::hours(24)};
};

// Every control a workflow may have; see Workflow::flow.
struct FlowControl {
    std::vector<Concurrency> concurrency;  // up to two
    std::optional<Throttle> throttle;
    std::optional<RateLimit> rate_limit;
    std::optional<Debounce> debounce;
    std::optional<Batching> batch;
    // An expression giving a number of seconds, clamped to +-kMaxPriority: the run's start
    // is ordered as if it came due that much earlier (a negative value: later).
    std::string priority;
    std::optional<Singleton> singleton;
    std::optional<Idempotency> idempotency;

    static constexpr long kMaxPriority = 43'200;  // 12 h

    bool any() const {
        return !concurrency.empty() || throttle || rate_limit || debounce || batch ||
               !priority.empty() || singleton || idempotency;
    }
};

}  // namespace cairn
