#pragma once

#include <nlohmann/json.hpp>

#include "storage/run_store.hpp"

namespace cairn::server {

// The JSON shapes of runs and events, shared by the HTTP API and `cairn ... --json`:
// snake_case fields, RFC 3339 times, ids as strings, stored JSON parsed.
nlohmann::json run_json(const storage::RunRecord& run);
nlohmann::json event_json(const storage::EventRecord& event);
// A run with its event and every step with every attempt (GET /api/engine/runs/{id}).
nlohmann::json run_detail_json(const storage::RunState& state,
                               const std::vector<storage::AttemptRecord>& attempts);

}  // namespace cairn::server
