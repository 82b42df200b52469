#pragma once

#include "server/http/router.hpp"

namespace cairn::engine {
class Engine;
}

namespace cairn::server {

// POST /api/engine/runs/{id}/cancel|retry|replay, and the same by filter:
// POST /api/engine/runs/cancel|retry|replay.
void add_run_operation_routes(Router& router, engine::Engine& eng);
// POST /api/engine/workflows/{id}/pause|resume.
void add_workflow_control_routes(Router& router, engine::Engine& eng);

}  // namespace cairn::server
