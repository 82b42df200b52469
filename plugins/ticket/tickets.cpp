#include "plugins/ticket/tickets.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>

#include "common/ids.hpp"
#include "common/time.hpp"
#include "engine/engine.hpp"
#include "storage/database.hpp"

namespace cairn::ticket {
namespace {

constexpr std::size_t kMaxTitle = 200;
constexpr std::size_t kMaxDescription = 20'000;
constexpr std::size_t kMaxReply = 10'000;
constexpr std::size_t kMaxTagLength = 32;

// Tags: 1 to 4, each lower-case letters, digits and - _ . + (a leading '#' is dropped).
std::optional<std::vector<std::string>> tags_field(const json& body, bool required,
                                                   Problems& problems) {
    if (!body.contains("tags")) {
        if (required) problems.add("tags", "is required: 1 to 4 tags");
        return std::nullopt;
    }
    const json& v = body["tags"];
    if (!v.is_array()) {
        problems.add("tags", "must be an array of 1 to 4 strings");
        return std::nullopt;
    }
    std::vector<std::string> out;
    for (const auto& e : v) {
        if (!e.is_string()) {
            problems.add("tags", "must be an array of strings");
            return std::nullopt;
        }
        std::string tag = trim(e.get<std::string>());
        if (tag.starts_with('#')) tag.erase(0, 1);
        for (char& c : tag) {
            c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            if (c == ' ') c = '-';
        }
        const bool ok = !tag.empty() && tag.size() <= kMaxTagLength &&
                        std::all_of(tag.begin(), tag.end(), [](char c) {
                            return std::isalnum(static_cast<unsigned char>(c)) || c == '-' ||
                                   c == '_' || c == '.' || c == '+';
                        });
        if (!ok) {
            problems.add("tags", fmt::format("each tag must be 1 to {} letters, digits or - _ . +",
                                             kMaxTagLength));
            return std::nullopt;
        }
        if (std::find(out.begin(), out.end(), tag) == out.end()) out.push_back(std::move(tag));
    }
    if (v.empty() || v.size() > 4) {
        problems.add("tags", "must hold 1 to 4 tags");
        return std::nullopt;
    }
    return out;
}

// deadline: null, or an RFC 3339 time not in the past. Outer optional: field present.
std::optional<std::optional<std::int64_t>> deadline_field(const json& body, std::int64_t now,
                                                          Problems& problems) {
    if (!body.contains("deadline")) return std::nullopt;
    const json& v = body["deadline"];
    if (v.is_null()) return std::optional<std::int64_t>{};
    if (!v.is_string()) {
        problems.add("deadline", "must be an RFC 3339 time string, e.g. 2026-12-01T17:00:00Z");
        return std::nullopt;
    }
    const auto ms = parse_rfc3339(v.get<std::string>());
    if (!ms) {
        problems.add("deadline", "is not an RFC 3339 time, e.g. 2026-12-01T17:00:00Z");
        return std::nullopt;
    }
    if (*ms < now - 60'000) {
        problems.add("deadline", "is in the past");
        return std::nullopt;
    }
    return std::optional<std::int64_t>{*ms};
}

// The fields a ticket's owner sets: required on create, each optional on update.
struct Content {
    std::optional<std::string> title;
    std::optional<std::string> description;
    std::optional<std::vector<std::string>> tags;
    std::optional<std::optional<std::int64_t>> deadline;
    bool any() const { return title || description || tags || deadline; }
};
Content content_fields(const json& body, bool required, std::int64_t now, Problems& problems) {
    Content c;
    c.title = string_field(body, "title", 1, kMaxTitle, required, problems);
    c.description = string_field(body, "description", 1, kMaxDescription, required, problems);
    c.tags = tags_field(body, required, problems);
    c.deadline = deadline_field(body, now, problems);
    return c;
}

const json& require_object(const json& body) {
    if (!body.is_object())
        throw ApiError(ErrorCode::validation_failed, "the body must be a JSON object");
    return body;
}

const std::string kSelectTicket = fmt::format("SELECT {} FROM tickets", kTicketColumns);

void write_ticket(storage::Transaction& tx, const Ticket& t) {
    tx.exec(
        "UPDATE tickets SET title = $1, description = $2, tags = $3, status = $4, priority = $5, "
        "deadline = $6, assigned_to = $7, updated_at = $8 WHERE id = $9",
        t.title, t.description, string_array(t.tags).dump(), t.status, t.priority, t.deadline,
        t.assigned_to, t.updated_at, t.id);
}

}  // namespace

json to_json(const Reply& r) {
    return {{"id", r.id},
            {"ticket_id", r.ticket_id},
            {"author_id", r.author_id},
            {"author_name", r.author_name},
            {"author_role", r.author_role},
            {"body", r.body},
            {"created_at", format_rfc3339(r.created_at)}};
}

void record_change(storage::Transaction& tx, const Ticket& t, std::string_view kind,
                   std::int64_t now) {
    tx.exec(
        "INSERT INTO ticket_changes (id, ticket_id, owner_id, assigned_to, kind, at) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        new_id_at(now), t.id, t.created_by, t.assigned_to, kind, now);
}

TicketService::TicketService(storage::Database& db, engine::Engine& engine, TicketLimits limits)
    : db_(db), engine_(engine), limits_(limits), posts_(db, engine, limits.max_queued_posts) {}

void TicketService::check_quota(std::string_view sql, const std::string& user_id, int limit,
                                std::string_view what) const {
    if (limit <= 0) return;
    constexpr std::int64_t kDayMs = 86'400'000;
    const std::int64_t now = now_ms();
    const auto rows = db_.read(sql, user_id, now - kDayMs, std::int64_t{limit});
    const auto& row = rows.front();
    if (row.get<std::int64_t>(0) < limit) return;
    const std::int64_t frees_at = row.get<std::int64_t>(1) + kDayMs;
    const int wait_s = static_cast<int>(std::max<std::int64_t>(1, (frees_at - now + 999) / 1000));
    throw ApiError(
        ErrorCode::rate_limited,
        fmt::format("the quota of {} {} a day is used up; try again in {} s", limit, what, wait_s),
        json::array(), wait_s);
}

TicketService::~TicketService() = default;

std::int64_t TicketService::now_ms() const {
    return engine_.clock().now_ms();
}

Ticket TicketService::visible(storage::Transaction& tx, const Principal& who,
                              const std::string& id) const {
    const auto rows = tx.exec(kSelectTicket + " WHERE id = $1", id);
    if (rows.empty()) throw ApiError(ErrorCode::not_found, "no such ticket");
    Ticket t = read_ticket(rows.front());
    if (!who.staff() && t.created_by != who.user_id)
        throw ApiError(ErrorCode::not_found, "no such ticket");
    return t;
}

namespace {

// A new ticket from a create's body (ApiError for a bad one).
Ticket new_ticket(const Principal& who, const json& raw) {
    const json& body = require_object(raw);
    const std::int64_t now = now_ms();
    Problems problems;
    const Content in = content_fields(body, true, now, problems);
    problems.check();
    Ticket t;
    t.id = new_id_at(now);
    t.title = *in.title;
    t.description = *in.description;
    t.tags = *in.tags;
    if (in.deadline) t.deadline = *in.deadline;
    t.created_by = who.user_id;
    t.created_at = t.updated_at = now;
    return t;
}

}  // namespace

namespace {
// Each reads at most `limit` index entries ($3): a user far over the quota costs no more.
constexpr std::string_view kTicketsToday =
    "SELECT count(*), min(created_at) FROM (SELECT created_at FROM tickets WHERE created_by = $1 "
    "AND created_at > $2 ORDER BY created_at DESC LIMIT $3) AS recent";
constexpr std::string_view kRepliesToday =
    "SELECT count(*), min(created_at) FROM (SELECT created_at FROM ticket_replies WHERE "
    "author_id = $1 AND created_at > $2 ORDER BY created_at DESC LIMIT $3) AS recent";
}  // namespace

Ticket TicketService::create(const Principal& who, const json& raw) {
    Ticket t = new_ticket(who, raw);
    check_quota(kTicketsToday, who.user_id, limits_.tickets_per_day, "tickets");
    auto out = posts_.write(who, std::move(t));
    if (out.error) std::rethrow_exception(out.error);
    return std::move(*out.ticket);
}

void TicketService::create(const Principal& who, const json& raw,
                           std::function<void(Created)> done) {
    Ticket t = new_ticket(who, raw);
    check_quota(kTicketsToday, who.user_id, limits_.tickets_per_day, "tickets");
    posts_.submit(who, std::move(t), std::move(done));
}

TicketPage TicketService::list(const Principal& who, const TicketQuery& q) const {
    Where where;
    if (!who.staff()) where.sql += " AND created_by = " + where.arg(who.user_id);
    if (q.status) where.sql += " AND status = " + where.arg(*q.status);
    if (q.priority) {
        where.sql += *q.priority == "unset" ? std::string(" AND priority IS NULL")
                                            : " AND priority = " + where.arg(*q.priority);
    }
    // Tags are stored as a JSON array of plain strings: match one whole element.
    if (q.tag)
        where.sql += " AND tags LIKE " + where.arg(fmt::format("%\"{}\"%", like_escape(*q.tag))) +
                     " ESCAPE '\\'";
    if (q.assigned_to_me) where.sql += " AND assigned_to = " + where.arg(who.user_id);
    if (q.assigned_to) where.sql += " AND assigned_to = " + where.arg(*q.assigned_to);
    if (q.search) {
        const auto p = where.arg(fmt::format("%{}%", like_escape(*q.search)));
        where.sql += fmt::format(
            " AND (lower(title) LIKE {0} ESCAPE '\\' OR lower(description) LIKE {0} ESCAPE '\\')",
            p);
    }
    std::string_view field = q.sort;
    const bool desc = field.starts_with('-');
    if (desc) field.remove_prefix(1);
    const std::string dir = desc ? "DESC" : "ASC";
    std::string order;
    if (field == "priority") {
        order = fmt::format(
            "CASE priority WHEN 'high' THEN 3 WHEN 'medium' THEN 2 WHEN 'low' THEN 1 ELSE 0 END {}",
            dir);
    } else if (field == "deadline") {
        order = fmt::format("(deadline IS NULL) ASC, deadline {}", dir);
    } else {
        order = fmt::format("{} {}", field, dir);  // validated by the caller
    }
    order += ", id " + dir;
    return db_.transact(
        [&](storage::Transaction& tx) {
            const auto found =
                fetch_page(tx, "tickets", kTicketColumns, where, order, q.page, q.limit);
            TicketPage page;
            page.total = found.total;
            for (const auto& r : found.rows) page.tickets.push_back(read_ticket(r));
            return page;
        },
        storage::Access::read_only);
}

Ticket TicketService::get(const Principal& who, const std::string& id) const {
    return db_.transact([&](storage::Transaction& tx) { return visible(tx, who, id); },
                        storage::Access::read_only);
}

Ticket TicketService::update(const Principal& who, const std::string& id, const json& raw) {
    const json& body = require_object(raw);
    const std::int64_t now = now_ms();
    Problems problems;
    const Content in = content_fields(body, false, now, problems);
    std::optional<std::string> status, priority;
    if (body.contains("status")) {
        if (!body["status"].is_string() || !is_status(body["status"].get<std::string>()))
            problems.add("status", "must be open, in_progress, resolved or closed");
        else
            status = body["status"].get<std::string>();
    }
    if (body.contains("priority")) {
        if (!body["priority"].is_string() || !is_priority(body["priority"].get<std::string>()))
            problems.add("priority", "must be low, medium or high");
        else
            priority = body["priority"].get<std::string>();
    }
    problems.check();
    const bool content = in.any();
    if (!content && !status && !priority)
        throw ApiError(ErrorCode::validation_failed,
                       "nothing to change: send title, description, tags, deadline, status or "
                       "priority");
    return db_.transact([&](storage::Transaction& tx) {
        Ticket t = visible(tx, who, id);
        if (content) {
            if (t.created_by != who.user_id)
                throw ApiError(ErrorCode::forbidden, "only the ticket's owner may edit it");
            if (t.status != "open")
                throw ApiError(
                    ErrorCode::conflict,
                    fmt::format("the ticket is {}; only open tickets can be edited", t.status));
        }
        if ((status || priority) && !who.staff())
            throw ApiError(ErrorCode::forbidden,
                           "only moderators and admins may change status or priority");
        if (in.title) t.title = *in.title;
        if (in.description) t.description = *in.description;
        if (in.tags) t.tags = *in.tags;
        if (in.deadline) t.deadline = *in.deadline;
        if (status) t.status = *status;
        if (priority) t.priority = *priority;
        t.updated_at = now;
        write_ticket(tx, t);
        record_change(tx, t, "updated", now);
        return t;
    });
}

Ticket TicketService::assign(const Principal& who, const std::string& id, const json& raw) {
    const json& body = require_object(raw);
    std::string key = body.contains("user_id") ? "user_id" : "assigned_to";
    if (!body.contains(key) || !body[key].is_string())
        throw ApiError(
            ErrorCode::validation_failed, "user_id is required",
            json::array({{{"field", "user_id"}, {"message", "is required and must be a string"}}}));
    const std::string user_id = body[key].get<std::string>();
    const std::int64_t now = now_ms();
    return db_.transact([&](storage::Transaction& tx) {
        Ticket t = visible(tx, who, id);
        if (!who.staff())
            throw ApiError(ErrorCode::forbidden, "only moderators and admins may assign tickets");
        const auto rows = tx.exec("SELECT role, active FROM users WHERE id = $1", user_id);
        if (rows.empty() || rows.front().get<std::int64_t>(1) == 0 ||
            !is_staff(parse_role(rows.front().get<std::string>(0)).value_or(Role::user)))
            throw ApiError(
                ErrorCode::validation_failed, "the assignee must be an active moderator or admin",
                json::array(
                    {{{"field", "user_id"}, {"message", "is not an active moderator or admin"}}}));
        t.assigned_to = user_id;
        t.updated_at = now;
        write_ticket(tx, t);
        record_change(tx, t, "updated", now);
        return t;
    });
}

Ticket TicketService::unassign(const Principal& who, const std::string& id) {
    const std::int64_t now = now_ms();
    return db_.transact([&](storage::Transaction& tx) {
        Ticket t = visible(tx, who, id);
        if (!who.staff())
            throw ApiError(ErrorCode::forbidden, "only moderators and admins may unassign tickets");
        t.assigned_to.reset();
        t.updated_at = now;
        write_ticket(tx, t);
        record_change(tx, t, "updated", now);
        return t;
    });
}

namespace {
constexpr std::string_view kSelectReply =
    "SELECT r.id, r.ticket_id, r.author_id, u.name, u.role, r.body, r.created_at "
    "FROM ticket_replies r JOIN users u ON u.id = r.author_id";
Reply read_reply(const storage::Row& row) {
    return {row.get<std::string>(0), row.get<std::string>(1), row.get<std::string>(2),
            row.get<std::string>(3), row.get<std::string>(4), row.get<std::string>(5),
            row.get<std::int64_t>(6)};
}
}  // namespace

std::vector<Reply> TicketService::replies(const Principal& who, const std::string& id) const {
    return db_.transact(
        [&](storage::Transaction& tx) {
            visible(tx, who, id);
            std::vector<Reply> out;
            for (const auto& r : tx.exec(std::string(kSelectReply) +
                                             " WHERE r.ticket_id = $1 ORDER BY r.created_at, r.id",
                                         id))
                out.push_back(read_reply(r));
            return out;
        },
        storage::Access::read_only);
}

Reply TicketService::add_reply(const Principal& who, const std::string& id, const json& raw) {
    const json& body = require_object(raw);
    Problems problems;
    auto text = string_field(body, "body", 1, kMaxReply, true, problems);
    problems.check();
    check_quota(kRepliesToday, who.user_id, limits_.replies_per_day, "replies");
    const std::int64_t now = now_ms();
    Reply reply;
    db_.transact([&](storage::Transaction& tx) {
        Ticket t = visible(tx, who, id);
        reply = {new_id_at(now), t.id, who.user_id, who.name, std::string(to_string(who.role)),
                 *text,          now};
        tx.exec(
            "INSERT INTO ticket_replies (id, ticket_id, author_id, body, created_at) "
            "VALUES ($1, $2, $3, $4, $5)",
            reply.id, reply.ticket_id, reply.author_id, reply.body, now);
        tx.exec("UPDATE tickets SET updated_at = $1 WHERE id = $2", now, t.id);
        if (who.staff() && who.user_id != t.created_by) {
            engine::EventInput event;
            event.name = "ticket/replied";
            event.data = {{"ticket_id", t.id}, {"reply_id", reply.id}};
            engine_.send(tx, event);
        }
        record_change(tx, t, "replied", now);
    });
    return reply;
}

void TicketService::remove(const Principal& who, const std::string& id) {
    const std::int64_t now = now_ms();
    db_.transact([&](storage::Transaction& tx) {
        Ticket t = visible(tx, who, id);
        if (who.role != Role::admin)
            throw ApiError(ErrorCode::forbidden, "only admins may delete tickets");
        tx.exec("DELETE FROM tickets WHERE id = $1", id);
        record_change(tx, t, "deleted", now);
    });
}

json TicketService::summary(const Principal& who) const {
    std::string where = who.staff() ? "" : "WHERE created_by = $1";
    json by_status = json::object(), by_priority = json::object();
    for (auto s : kStatuses) by_status[std::string(s)] = 0;
    for (auto p : kPriorities) by_priority[std::string(p)] = 0;
    by_priority["unset"] = 0;
    std::int64_t total = 0, mine = 0;
    db_.transact(
        [&](storage::Transaction& tx) {
            const std::string sql = "SELECT status, priority, COUNT(*) FROM tickets " + where +
                                    " GROUP BY status, priority";
            const auto rows = who.staff() ? tx.exec(sql) : tx.exec(sql, who.user_id);
            for (const auto& r : rows) {
                const auto n = r.get<std::int64_t>(2);
                total += n;
                const auto status = r.get<std::string>(0);
                by_status[status] = by_status.value(status, std::int64_t{0}) + n;
                const auto priority = r.get_opt<std::string>(1).value_or("unset");
                by_priority[priority] = by_priority.value(priority, std::int64_t{0}) + n;
            }
            mine = tx.exec(
                         "SELECT COUNT(*) FROM tickets WHERE assigned_to = $1 AND status IN "
                         "('open', 'in_progress')",
                         who.user_id)
                       .front()
                       .get<std::int64_t>(0);
        },
        storage::Access::read_only);
    return {{"scope", who.staff() ? "all" : "own"},
            {"total", total},
            {"by_status", by_status},
            {"by_priority", by_priority},
            {"assigned_to_me_open", mine}};
}

// ---- workflow operations ------------------------------------------------------------

std::optional<Ticket> TicketService::load(const std::string& id) const {
    const auto rows = db_.read(kSelectTicket + " WHERE id = $1", id);
    if (rows.empty()) return std::nullopt;
    return read_ticket(rows.front());
}

bool TicketService::mark_in_progress(storage::Transaction& tx, const std::string& id) {
    const std::int64_t now = now_ms();
    const auto rows = tx.exec(kSelectTicket + " WHERE id = $1", id);
    if (rows.empty()) return false;
    Ticket t = read_ticket(rows.front());
    if (t.status == "open") {
        t.status = "in_progress";
        t.updated_at = now;
        write_ticket(tx, t);
        record_change(tx, t, "updated", now);
    }
    return true;
}

bool TicketService::save_analysis(storage::Transaction& tx, const std::string& id,
                                  const Analysis& a) {
    const std::int64_t now = now_ms();
    const auto rows = tx.exec(kSelectTicket + " WHERE id = $1", id);
    if (rows.empty()) return false;
    Ticket t = read_ticket(rows.front());
    if (!t.priority) t.priority = a.priority;  // a priority set by staff stands
    tx.exec(
        "UPDATE tickets SET priority = $1, helpful_notes = $2, related_skills = $3, "
        "summary = $4, updated_at = $5 WHERE id = $6",
        t.priority, a.helpful_notes, string_array(a.related_skills).dump(), a.summary, now, id);
    record_change(tx, t, "updated", now);
    return true;
}

std::optional<User> TicketService::pick_assignee(const std::string& id,
                                                 const std::vector<std::string>& skills) const {
    return db_.transact(
        [&](storage::Transaction& tx) -> std::optional<User> {
            const auto ticket = tx.exec("SELECT assigned_to FROM tickets WHERE id = $1", id);
            if (ticket.empty()) return std::nullopt;
            if (auto current = ticket.front().get_opt<std::string>(0)) {
                const auto rows = tx.exec(
                    fmt::format("SELECT {} FROM users WHERE id = $1", kUserColumns), *current);
                if (!rows.empty()) return read_user(rows.front());
            }
            struct Candidate {
                User user;
                std::size_t score;
            };
            std::vector<Candidate> staff;
            const auto rows = tx.exec(fmt::format(
                "SELECT {} FROM users WHERE active = 1 AND role IN ('moderator', 'admin') "
                "ORDER BY created_at, id",
                kUserColumns));
            std::set<std::string> wanted;
            for (const auto& s : skills) wanted.insert(normalize_skill(s));
            for (const auto& r : rows) {
                Candidate c{read_user(r), 0};
                for (const auto& s : c.user.skills) c.score += wanted.count(normalize_skill(s));
                staff.push_back(std::move(c));
            }
            // Best score first, then the fewest open tickets; on equal loads the
            // longest-standing. The loads are counted only to break a tie on the score, in
            // one statement, as counting walks every open ticket of each.
            auto best = [&](auto keep) -> std::optional<User> {
                std::vector<const Candidate*> top;  // the best score's, longest-standing first
                for (const auto& c : staff) {
                    if (!keep(c)) continue;
                    if (top.empty() || c.score > top.front()->score) top.clear();
                    if (top.empty() || c.score == top.front()->score) top.push_back(&c);
                }
                if (top.empty()) return std::nullopt;
                if (top.size() == 1) return top.front()->user;
                Where ids;
                std::string list;
                for (const Candidate* c : top)
                    list += (list.empty() ? "" : ", ") + ids.arg(c->user.id);
                std::map<std::string, std::int64_t, std::less<>> load;
                for (const auto& r : tx.exec_values(
                         fmt::format("SELECT assigned_to, COUNT(*) FROM tickets WHERE assigned_to "
                                     "IN ({}) AND status IN ('open', 'in_progress') GROUP BY "
                                     "assigned_to",
                                     list),
                         ids.values))
                    load[r.get<std::string>(0)] = r.get<std::int64_t>(1);
                const auto of = [&](const Candidate* c) {
                    const auto it = load.find(c->user.id);
                    return it == load.end() ? 0 : it->second;
                };
                const Candidate* pick = top.front();
                for (const Candidate* c : top)
                    if (of(c) < of(pick)) pick = c;
                return pick->user;
            };
            if (auto m = best([](const Candidate& c) {
                    return c.user.role == Role::moderator && c.score > 0;
                }))
                return m;
            if (auto a = best([](const Candidate& c) { return c.user.role == Role::admin; }))
                return a;
            return best([](const Candidate& c) { return c.user.role == Role::moderator; });
        },
        storage::Access::read_only);
}

std::optional<std::string> TicketService::assign_if_unassigned(storage::Transaction& tx,
                                                               const std::string& id,
                                                               const std::string& user_id) {
    const std::int64_t now = now_ms();
    const auto rows = tx.exec(kSelectTicket + " WHERE id = $1", id);
    if (rows.empty()) return std::nullopt;
    Ticket t = read_ticket(rows.front());
    if (!t.assigned_to) {
        t.assigned_to = user_id;
        t.updated_at = now;
        write_ticket(tx, t);
        record_change(tx, t, "updated", now);
    }
    return t.assigned_to;
}

std::optional<Reply> TicketService::load_reply(const std::string& reply_id) const {
    const auto rows = db_.read(std::string(kSelectReply) + " WHERE r.id = $1", reply_id);
    if (rows.empty()) return std::nullopt;
    return read_reply(rows.front());
}

}  // namespace cairn::ticket
