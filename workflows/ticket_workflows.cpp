#include "workflows/ticket_workflows.hpp"

#include "engine/engine.hpp"
#include "workflows/flows.hpp"

namespace cairn::workflows {

void register_ticket_workflows(engine::Engine& engine, ticket::Services& s) {
    engine.add(workflow("user-signup").on_event("user/signup").retries(5).run([&s](Context& ctx) {
        return user_signup(ctx, s);
    }));
    // A model call may be slow or rate limited: more retries, capped backoff.
    RetryPolicy policy;
    policy.max_attempts = 6;
    policy.initial_delay = std::chrono::milliseconds(500);
    policy.max_delay = std::chrono::seconds(60);
    engine.add(workflow("ticket-created")
                   .on_event("ticket/created")
                   .retry_policy(policy)
                   .run([&s](Context& ctx) { return ticket_created(ctx, s); }));
    engine.add(
        workflow("ticket-replied").on_event("ticket/replied").retries(5).run([&s](Context& ctx) {
            return ticket_replied(ctx, s);
        }));
}

}  // namespace cairn::workflows
