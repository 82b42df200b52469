#pragma once

#include "cairn/context.hpp"

namespace cairn::ticket {
struct Services;
}

// The workflow functions, one per file; ticket_workflows.cpp registers them.
namespace cairn::workflows {
json user_signup(Context& ctx, ticket::Services& services);
json ticket_created(Context& ctx, ticket::Services& services);
json ticket_replied(Context& ctx, ticket::Services& services);
}  // namespace cairn::workflows
