// user-signup: load the user -> send the welcome email.

#include <fmt/format.h>

#include "engine/engine.hpp"
#include "plugins/ticket/ticket_plugin.hpp"
#include "workflows/flows.hpp"

namespace cairn::workflows {

json user_signup(Context& ctx, ticket::Services& s) {
    const std::string user_id = ctx.event()["data"].value("user_id", "");
    const json user = ctx.step("load-user", [&]() -> json {
        const auto rows = s.db.read("SELECT email, name FROM users WHERE id = $1", user_id);
        if (rows.empty()) return nullptr;
        return {{"email", rows.front().get<std::string>(0)},
                {"name", rows.front().get<std::string>(1)}};
    });
    if (user.is_null()) return {{"outcome", "user no longer exists"}};

    ctx.step("send-welcome-email", [&] {
        ticket::Mail mail;
        mail.to = user["email"].get<std::string>();
        mail.subject = "Welcome to Cairn support";
        mail.body = fmt::format(
            "Hello {},\n\nyour account is ready. Open a ticket whenever you need help: we read "
            "every one, and the right person gets it within moments.\n{}\n— Cairn support",
            user["name"].get<std::string>(),
            s.config.public_url.empty() ? "" : "\n" + s.config.public_url + "\n");
        mail.idempotency_key = ctx.run_id() + ":welcome";
        return s.mailer->send(mail);
    });
    return {{"outcome", "welcomed"}, {"email", user["email"]}};
}

}  // namespace cairn::workflows
