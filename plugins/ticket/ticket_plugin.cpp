#include "plugins/ticket/ticket_plugin.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cstdlib>

#include "engine/engine.hpp"
#include "storage/database.hpp"

namespace cairn::ticket {
namespace {

std::optional<std::string> env(const char* name) {
    const char* v = std::getenv(name);  // NOLINT(concurrency-mt-unsafe): read at start-up
    if (v == nullptr || *v == '\0') return std::nullopt;
    return std::string(v);
}

long env_number(const char* name, long fallback, long min, long max) {
    const auto v = env(name);
    if (!v) return fallback;
    char* end = nullptr;
    const long n = std::strtol(v->c_str(), &end, 10);
    if (end == v->c_str() || *end != '\0' || n < min || n > max)
        throw std::invalid_argument(
            fmt::format("{}='{}' must be a whole number from {} to {}", name, *v, min, max));
    return n;
}

// Logins waiting for a password thread; past this they are answered 503 at once.
constexpr std::size_t kPasswordQueue = 64;

}  // namespace

TicketConfig TicketConfig::from_env() {
    TicketConfig c;
    c.jwt_secret = env("CAIRN_JWT_SECRET");
    c.auth.access_ttl = std::chrono::seconds(env_number("CAIRN_ACCESS_TTL_S", 900, 10, 86'400));
    c.auth.ip_per_minute = static_cast<int>(env_number("CAIRN_AUTH_RATE_IP", 100, 0, 1'000'000));
    c.auth.account_per_minute =
        static_cast<int>(env_number("CAIRN_AUTH_RATE_ACCOUNT", 10, 0, 1'000'000));
    c.ai.kind = env("CAIRN_AI").value_or("heuristic");
    c.ai.url = env("CAIRN_AI_URL").value_or("");
    c.ai.key = env("CAIRN_AI_KEY").value_or("");
    c.ai.model = env("CAIRN_AI_MODEL").value_or("");
    c.ai.timeout =
        std::chrono::milliseconds(env_number("CAIRN_AI_TIMEOUT_MS", 30'000, 100, 600'000));
    c.mail = env("CAIRN_MAIL").value_or("outbox");
    c.mail_from = env("CAIRN_MAIL_FROM").value_or(c.mail_from);
    c.public_url = env("CAIRN_PUBLIC_URL").value_or("");
    while (!c.public_url.empty() && c.public_url.back() == '/') c.public_url.pop_back();
    c.password_threads = static_cast<int>(env_number("CAIRN_PASSWORD_THREADS", 2, 1, 64));
    c.limits.max_queued_posts =
        static_cast<int>(env_number("CAIRN_TICKET_QUEUE", 1024, 1, 1'000'000));
    c.limits.tickets_per_day =
        static_cast<int>(env_number("CAIRN_QUOTA_TICKETS", 1000, 0, 100'000'000));
    c.limits.replies_per_day =
        static_cast<int>(env_number("CAIRN_QUOTA_REPLIES", 5000, 0, 100'000'000));
    c.auth.user_per_minute = static_cast<int>(env_number("CAIRN_RATE_USER", 3000, 0, 100'000'000));
    c.websockets_per_user = static_cast<int>(env_number("CAIRN_WS_PER_USER", 8, 1, 10'000));
    return c;
}

Services::Services(storage::Database& d, engine::Engine& e, TicketConfig c)
    : db(d),
      engine(e),
      config(std::move(c)),
      auth(d, e, load_jwt_secret(d, config.jwt_secret), config.auth),
      users(d, e.clock()),
      tickets(d, e, config.limits),
      feed(d, e.clock()),
      analyzer(make_analyzer(config.ai)),
      fallback(make_heuristic_analyzer()),
      mailer(make_mailer(config.mail, config.mail_from, d)),
      websockets(config.websockets_per_user),
      passwords(static_cast<std::size_t>(config.password_threads), kPasswordQueue) {}

void TicketPlugin::start(const plugins::PluginContext& ctx) {
    TicketConfig config = config_ ? *config_ : TicketConfig::from_env();
    services_ = std::make_unique<Services>(ctx.db, ctx.engine, std::move(config));
    spdlog::info("ticket plugin: analyser {}, mail {}", services_->analyzer->name(),
                 redact_mail_spec(services_->config.mail));
}

void TicketPlugin::register_workflows(engine::Engine& engine) {
    if (workflows_) workflows_(engine, *services_);
}

void TicketPlugin::add_routes(server::Router& router) {
    add_ticket_routes(router, *services_);
}

}  // namespace cairn::ticket
