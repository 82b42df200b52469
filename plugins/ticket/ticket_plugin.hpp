#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "common/slots.hpp"
#include "plugins/plugin.hpp"
#include "plugins/ticket/ai.hpp"
#include "plugins/ticket/auth.hpp"
#include "plugins/ticket/feed.hpp"
#include "plugins/ticket/mail.hpp"
#include "plugins/ticket/tickets.hpp"
#include "plugins/ticket/users.hpp"

namespace cairn::ticket {

// The plugin's settings, from the environment (docs/tickets.md lists them).
struct TicketConfig {
    std::optional<std::string> jwt_secret;  // CAIRN_JWT_SECRET
    AuthSettings auth;  // CAIRN_ACCESS_TTL_S, CAIRN_AUTH_RATE_IP, CAIRN_AUTH_RATE_ACCOUNT
    AnalyzerConfig ai;  // CAIRN_AI, CAIRN_AI_URL, CAIRN_AI_KEY, CAIRN_AI_MODEL, CAIRN_AI_TIMEOUT_MS
    std::string mail = "outbox";                        // CAIRN_MAIL
    std::string mail_from = "Cairn <cairn@localhost>";  // CAIRN_MAIL_FROM
    std::string public_url;                             // CAIRN_PUBLIC_URL: links in emails
    int password_threads = 2;                           // CAIRN_PASSWORD_THREADS
    TicketLimits limits;          // CAIRN_TICKET_QUEUE, CAIRN_QUOTA_TICKETS, CAIRN_QUOTA_REPLIES
    int websockets_per_user = 8;  // CAIRN_WS_PER_USER

    // Throws std::invalid_argument naming the variable that is wrong.
    static TicketConfig from_env();
};

// The ticket plugin's services, built by start(). Workflows and routes use them.
struct Services {
    Services(storage::Database& db, engine::Engine& engine, TicketConfig config);

    storage::Database& db;
    engine::Engine& engine;
    TicketConfig config;
    AuthService auth;
    UserService users;
    TicketService tickets;
    ChangeFeed feed;
    std::unique_ptr<Analyzer> analyzer;
    std::unique_ptr<Analyzer> fallback;  // heuristic, when the configured model fails for good
    std::unique_ptr<Mailer> mailer;
    Slots websockets;  // live WebSockets per user
    // Last: destroyed first, it finishes queued work, which uses the services above.
    PasswordPool passwords;
};

storage::Component ticket_component();

// The plugin: users, auth, tickets, the WebSocket feed, and the user-signup,
// ticket-created and ticket-replied workflows.
//
// The workflows live in workflows/ (on top of these services), so they are handed in:
// `cairn` passes workflows::register_ticket_workflows.
class TicketPlugin final : public plugins::Plugin {
  public:
    using WorkflowsFn = std::function<void(engine::Engine&, Services&)>;
    explicit TicketPlugin(WorkflowsFn workflows, std::optional<TicketConfig> config = std::nullopt)
        : workflows_(std::move(workflows)), config_(std::move(config)) {}
    std::string_view name() const override { return "ticket"; }
    std::vector<storage::Component> components() const override { return {ticket_component()}; }
    void start(const plugins::PluginContext& ctx) override;
    void register_workflows(engine::Engine& engine) override;
    void add_routes(server::Router& router) override;
    Services& services() { return *services_; }

  private:
    WorkflowsFn workflows_;
    std::optional<TicketConfig> config_;
    std::unique_ptr<Services> services_;
};

// Adds the /api/v1 routes (docs/tickets.md) to `router`.
void add_ticket_routes(server::Router& router, Services& services);

}  // namespace cairn::ticket
