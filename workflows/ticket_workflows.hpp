#pragma once

namespace cairn::engine {
class Engine;
}
namespace cairn::ticket {
struct Services;
}

namespace cairn::workflows {

// Registers user-signup (on user/signup), ticket-created (on ticket/created) and
// ticket-replied (on ticket/replied). `services` must outlive the engine's workers.
void register_ticket_workflows(engine::Engine& engine, ticket::Services& services);

}  // namespace cairn::workflows
