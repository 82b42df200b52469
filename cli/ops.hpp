#pragma once

#include <optional>
#include <string>

#include "engine/engine.hpp"
#include "storage/run_store.hpp"

namespace cairn::cli {

// The verbs that inspect and operate runs, on the database directly. Each prints a table
// (or JSON with as_json) and returns an exit code (app.hpp).
// `events`: the comma-separated names and prefixes the key may send; empty for any.
int keys_create(storage::Database& db, const std::string& name, const std::string& scope,
                const std::string& events, bool as_json);
int keys_list(storage::Database& db, bool as_json);
int keys_revoke(storage::Database& db, const std::string& id);

int runs_list(engine::Engine& engine, const storage::RunFilter& filter,
              const std::optional<std::string>& cursor, int limit, bool as_json);
int runs_show(engine::Engine& engine, const std::string& id, bool as_json);
int runs_cancel(engine::Engine& engine, const std::string& id, bool as_json);
int runs_retry(engine::Engine& engine, const std::string& id, bool as_json);
// Cancels, retries or replays every run matching `filter` after printing the count and
// asking (unless yes), with a progress line on stderr every 500 runs.
int runs_bulk(engine::Engine& engine, engine::Engine::BulkOperation op,
              const storage::RunFilter& filter, bool yes, bool as_json);
// With `data` (JSON text), the new run's event carries that data instead.
int runs_replay(engine::Engine& engine, const std::string& id,
                const std::optional<std::string>& from_step, const std::optional<std::string>& data,
                bool as_json);
// Pauses or resumes a workflow on the database.
int workflows_pause(engine::Engine& engine, const std::string& id, bool pause, bool as_json);

int events_send(engine::Engine& engine, const std::string& name, const std::string& data,
                const std::optional<std::string>& idempotency_key, bool as_json);
int events_list(engine::Engine& engine, const std::optional<std::string>& name, int limit,
                bool as_json);
int workflows_list(engine::Engine& engine, bool as_json);
// Deletes (or with dry_run counts) the runs of `statuses` that ended before `ended_before`,
// with a progress line per batch on stderr.
int gc_runs(engine::Engine& engine, std::int64_t ended_before,
            const std::vector<std::string>& statuses, bool dry_run, bool as_json);

// "90s", "15m", "1h", "2d" -> milliseconds; nullopt when malformed.
std::optional<std::int64_t> parse_duration_ms(const std::string& text);

}  // namespace cairn::cli
