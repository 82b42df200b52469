#pragma once

#include <cstdint>

namespace cairn::engine::detail {

// Control-flow signals that unwind a workflow function. They do not derive from
// std::exception, so `catch (const std::exception&)` in workflow code lets them pass.
// Workflow code must not swallow them with `catch (...)` (rethrow with `throw;`).
struct Signal {};
struct Suspend : Signal {};    // state saved and lease released; resume later by replay
struct LeaseLost : Signal {};  // another worker owns the run now: write nothing more
struct Cancelled : Signal {};  // the run was cancelled: stop at this step boundary
struct RunTimedOut : Signal {
    std::int64_t limit_ms;
};

}  // namespace cairn::engine::detail
