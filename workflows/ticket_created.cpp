// ticket-created: load -> mark in progress -> AI analysis -> save it -> pick the assignee
// -> assign -> email them. Each step is idempotent, and the three that write the ticket
// commit with their records (Context::transaction); a ticket deleted meanwhile ends the
// run cleanly at the next step that notices.

#include <fmt/format.h>

#include "engine/engine.hpp"
#include "plugins/ticket/ticket_plugin.hpp"
#include "workflows/flows.hpp"

namespace cairn::workflows {
namespace {

const json kDeleted = {{"outcome", "ticket deleted"}};

ticket::TicketText text_of(const json& t, std::int64_t now) {
    ticket::TicketText text;
    text.title = t.value("title", "");
    text.description = t.value("description", "");
    text.tags = t.value("tags", std::vector<std::string>{});
    if (t.contains("deadline_ms") && t["deadline_ms"].is_number_integer())
        text.deadline = t["deadline_ms"].get<std::int64_t>();
    text.now_ms = now;
    return text;
}

}  // namespace

json ticket_created(Context& ctx, ticket::Services& s) {
    const std::string id = ctx.event()["data"].value("ticket_id", "");

    const json t = ctx.step("load-ticket", [&]() -> json {
        const auto ticket = s.tickets.load(id);
        if (!ticket) return nullptr;
        json j = ticket::to_json(*ticket);
        j["deadline_ms"] = ticket->deadline ? json(*ticket->deadline) : json(nullptr);
        return j;
    });
    if (t.is_null()) return kDeleted;

    // The steps that write tickets are transactions: a write commits with its step's record.
    if (!ctx.transaction("mark-in-progress", [&](storage::Transaction& tx) {
            return s.tickets.mark_in_progress(tx, id);
        }))
        return kDeleted;

    // The analysis reads "now" for deadline proximity: the ticket's creation time keeps
    // the step deterministic across retries.
    const auto text = text_of(t, ctx.event().value("ts", std::int64_t{0}));
    json analysis;
    try {
        analysis = ctx.step("analyse", [&] { return ticket::to_json(s.analyzer->analyse(text)); });
    } catch (const StepFailed& e) {
        // The model is unavailable or keeps answering nonsense: the offline analyser still
        // gets the ticket to a person.
        ctx.log(fmt::format("{} analysis failed for good ({}); using the heuristic analyser",
                            s.analyzer->name(), e.what()));
        analysis = ctx.step("analyse-fallback",
                            [&] { return ticket::to_json(s.fallback->analyse(text)); });
    }

    if (!ctx.transaction("save-analysis", [&](storage::Transaction& tx) {
            return s.tickets.save_analysis(tx, id, ticket::validate_analysis(analysis));
        }))
        return kDeleted;

    const json assignee = ctx.step("pick-assignee", [&]() -> json {
        const auto user =
            s.tickets.pick_assignee(id, analysis["related_skills"].get<std::vector<std::string>>());
        if (!user) return nullptr;
        return {{"id", user->id},
                {"email", user->email},
                {"name", user->name},
                {"role", ticket::to_string(user->role)}};
    });
    if (assignee.is_null()) {
        return {{"outcome", "analysed; no active moderator or admin to assign"},
                {"priority", analysis["priority"]}};
    }

    const json assigned = ctx.transaction("assign", [&](storage::Transaction& tx) -> json {
        const auto who = s.tickets.assign_if_unassigned(tx, id, assignee["id"].get<std::string>());
        return who ? json(*who) : json(nullptr);
    });
    if (assigned.is_null()) return kDeleted;

    ctx.step("email-assignee", [&] {
        // Mail whoever holds the ticket now (staff may have assigned it meanwhile).
        const auto rows =
            s.db.read("SELECT email, name FROM users WHERE id = $1", assigned.get<std::string>());
        if (rows.empty()) return false;
        ticket::Mail mail;
        mail.to = rows.front().get<std::string>(0);
        mail.subject =
            fmt::format("[{}] Ticket assigned: {}", analysis["priority"].get<std::string>(),
                        t["title"].get<std::string>());
        mail.body = fmt::format(
            "Hello {},\n\na ticket has been assigned to you.\n\nTitle: {}\nPriority: {}\n"
            "Summary: {}\nRelated skills: {}\n\nNotes:\n{}\n\nDescription:\n{}\n{}",
            rows.front().get<std::string>(1), t["title"].get<std::string>(),
            analysis["priority"].get<std::string>(), analysis["summary"].get<std::string>(),
            fmt::join(analysis["related_skills"].get<std::vector<std::string>>(), ", "),
            analysis["helpful_notes"].get<std::string>(), t["description"].get<std::string>(),
            s.config.public_url.empty()
                ? ""
                : fmt::format("\n{}/api/v1/tickets/{}\n", s.config.public_url, id));
        mail.idempotency_key = ctx.run_id() + ":assignee";
        return s.mailer->send(mail);
    });
    return {{"outcome", "assigned"},
            {"ticket_id", id},
            {"priority", analysis["priority"]},
            {"related_skills", analysis["related_skills"]},
            {"assigned_to", assigned}};
}

}  // namespace cairn::workflows
