// ticket-replied: a moderator or admin answered a ticket -> email its owner.

#include <fmt/format.h>

#include "engine/engine.hpp"
#include "plugins/ticket/ticket_plugin.hpp"
#include "workflows/flows.hpp"

namespace cairn::workflows {

json ticket_replied(Context& ctx, ticket::Services& s) {
    const std::string reply_id = ctx.event()["data"].value("reply_id", "");
    const json mail = ctx.step("load-reply", [&]() -> json {
        const auto reply = s.tickets.load_reply(reply_id);
        if (!reply) return nullptr;
        const auto ticket = s.tickets.load(reply->ticket_id);
        if (!ticket) return nullptr;
        const auto owner =
            s.db.read("SELECT email, name FROM users WHERE id = $1", ticket->created_by);
        if (owner.empty()) return nullptr;
        return {{"to", owner.front().get<std::string>(0)},
                {"name", owner.front().get<std::string>(1)},
                {"title", ticket->title},
                {"author", reply->author_name},
                {"body", reply->body}};
    });
    if (mail.is_null()) return {{"outcome", "reply or ticket deleted"}};
    ctx.step("email-owner", [&] {
        ticket::Mail m;
        m.to = mail["to"].get<std::string>();
        m.subject = fmt::format("New reply on your ticket: {}", mail["title"].get<std::string>());
        m.body = fmt::format("Hello {},\n\n{} replied to your ticket \"{}\":\n\n{}\n",
                             mail["name"].get<std::string>(), mail["author"].get<std::string>(),
                             mail["title"].get<std::string>(), mail["body"].get<std::string>());
        m.idempotency_key = ctx.run_id() + ":owner";
        return s.mailer->send(m);
    });
    return {{"outcome", "owner notified"}, {"to", mail["to"]}};
}

}  // namespace cairn::workflows
