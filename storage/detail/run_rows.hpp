#pragma once

// Internal to storage/: the run store's column lists and the readers that map their rows
// to records, shared by the files of RunStore.

#include <cstddef>
#include <string>
#include <string_view>

#include "storage/records.hpp"
#include "storage/result.hpp"

namespace cairn::storage::detail {

// A run's columns for read_run but the last, its updated_at ("r" the run, "e" its event).
inline constexpr std::string_view kRunColumnsButUpdated =
    "r.id, r.workflow_id, r.version, r.event_id, e.name, r.status, r.output, r.error, r.attempt, "
    "r.created_at, r.started_at, r.ended_at, r.parent_run_id, r.parent_step_key, r.worker, "
    "r.replay_of";
// A run's columns for read_run. A run changes when its row does or when one of its steps
// does: its updated_at is the later of the two (steps carry their own change time, so a
// step does not write its run's row).
const std::string& run_columns();

inline constexpr std::string_view kStepColumns =
    "run_id, step_key, seq, status, output, error, attempts, started_at, ended_at, kind, wake_at";
inline constexpr std::string_view kEventColumns =
    "id, name, data, ts, idempotency_key, received_at";

// A run with its event and whether it has steps yet (column kFreshColumn), for load and
// claims: the run columns, then these.
inline constexpr std::string_view kStateExtraColumns =
    "e.data, e.ts, e.idempotency_key, e.received_at, "
    "NOT EXISTS (SELECT 1 FROM steps st WHERE st.run_id = r.id)";
inline constexpr std::size_t kFreshColumn = 21;

// Statements shared by several readers, formatted once.
const std::string& run_by_id_sql();
const std::string& event_by_id_sql();
const std::string& steps_of_run_sql();
const std::string& run_state_sql();

RunRecord read_run(const Row& row);
StepRecord read_step(const Row& row);
EventRecord read_event(const Row& row);
// The run and its event from a row of run_state_sql's shape; no steps.
RunState read_state(const Row& row);

// `text` lower-cased with LIKE's wildcards escaped (ESCAPE '\'), then '%': a prefix match.
std::string like_prefix(std::string_view text);

}  // namespace cairn::storage::detail
