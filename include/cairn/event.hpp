#pragma once

// Part of Cairn's public API (docs/library.md).

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace cairn {

// An event to send. `data` is any JSON value (an object by convention).
struct EventInput {
    std::string name;
    nlohmann::json data = nlohmann::json::object();
    std::optional<std::string> id;
    std::optional<std::string> idempotency_key;
    std::optional<std::int64_t> ts;
};

struct SendResult {
    std::string event_id;
    std::vector<std::string> run_ids;
    bool duplicate = false;
    int waits_resumed = 0;
};

struct WorkerOptions {
    int threads = 4;                          // runs executed at once
    std::chrono::milliseconds lease{30'000};  // renewed every lease/3 while running
    std::chrono::milliseconds poll{1'000};    // longest idle wait between queue checks
    std::string worker_id;                    // generated when empty: host:pid:random
    // What the process calls itself in the processes table (listings of every process's
    // workflows).
    std::string process_name = "cairn";
    // Runs that ended longer ago than this are deleted, with their steps and the events
    // no run needs (so event ids and idempotency keys are remembered this long); 0 keeps
    // everything.
    std::chrono::milliseconds retention{std::chrono::hours(24 * 30)};
};

}  // namespace cairn
