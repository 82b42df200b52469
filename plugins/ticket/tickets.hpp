#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "plugins/ticket/auth.hpp"
#include "plugins/ticket/model.hpp"
#include "plugins/ticket/ticket_posts.hpp"

namespace cairn::storage {
class Database;
class Transaction;
}  // namespace cairn::storage
namespace cairn::engine {
class Engine;
}

namespace cairn::ticket {

struct TicketQuery {
    std::optional<std::string> status;
    std::optional<std::string> priority;
    std::optional<std::string> tag;
    std::optional<std::string> search;       // in title or description, case-insensitive
    std::optional<std::string> assigned_to;  // a user id
    bool assigned_to_me = false;
    std::string sort = "-created_at";  // created_at, updated_at, priority, deadline, status, title;
                                       // '-' = descending
    int page = 1;
    int limit = 20;
};

struct TicketPage {
    std::vector<Ticket> tickets;
    std::int64_t total = 0;
};

struct Reply {
    std::string id;
    std::string ticket_id;
    std::string author_id;
    std::string author_name;
    std::string author_role;
    std::string body;
    std::int64_t created_at = 0;
};
json to_json(const Reply& reply);

// Bounds on what one user may write; 0 turns a quota off.
struct TicketLimits {
    int max_queued_posts = 1024;  // CAIRN_TICKET_QUEUE: posts waiting for the writer
    int tickets_per_day = 1000;   // CAIRN_QUOTA_TICKETS: per user, the last 24 hours
    int replies_per_day = 5000;   // CAIRN_QUOTA_REPLIES: per user, the last 24 hours
};

// Tickets, replies and the operations the workflows perform on them. Thread-safe.
//
// Visibility: a user sees the tickets they created; moderators and admins see all. A
// ticket the caller may not see is reported as not_found (404), so its existence does not
// leak. Every change also writes a row to ticket_changes, which the WebSocket feed reads.
class TicketService {
  public:
    TicketService(storage::Database& db, engine::Engine& engine, TicketLimits limits = {});
    ~TicketService();

    // {title, description, tags (1-4), deadline?}: the ticket and `ticket/created` commit
    // together (TicketPosts), only while `who`'s session is live (who.user_id and
    // who.session_id; else ApiError unauthorized and nothing written); the ticket carries
    // the id of the run that event started. A bad body throws ApiError at once, and so does
    // a user over the day's quota (rate_limited, retry_after_s until a ticket ages out).
    Ticket create(const Principal& who, const json& body);
    // The same without holding the calling thread for the write: a bad body throws here;
    // `done` gets the ticket or the error once, on the thread that wrote (maybe this one,
    // before this returns), and must not block.
    using Created = TicketPosts::Outcome;
    void create(const Principal& who, const json& body, std::function<void(Created)> done);
    TicketPage list(const Principal& who, const TicketQuery& query) const;
    Ticket get(const Principal& who, const std::string& id) const;
    // Owner (while open): title, description, tags, deadline. Staff: status, priority.
    Ticket update(const Principal& who, const std::string& id, const json& body);
    // Staff: {user_id} of an active moderator or admin; unassign clears it.
    Ticket assign(const Principal& who, const std::string& id, const json& body);
    Ticket unassign(const Principal& who, const std::string& id);
    std::vector<Reply> replies(const Principal& who, const std::string& id) const;
    // Owner or staff: {body}. A reply by staff emits `ticket/replied` (the owner is mailed).
    Reply add_reply(const Principal& who, const std::string& id, const json& body);
    void remove(const Principal& who, const std::string& id);  // admin only
    // Counts by status and priority over the tickets the caller can see.
    json summary(const Principal& who) const;

    // ---- for workflows: no permission checks, idempotent ----
    // Those that write take the caller's transaction, a workflow's transaction step
    // (Context::transaction), so the write and the step's record commit together.
    std::optional<Ticket> load(const std::string& id) const;
    // Moves an open ticket to in_progress. False when the ticket no longer exists.
    bool mark_in_progress(storage::Transaction& tx, const std::string& id);
    // Stores the analysis (priority only when none is set yet). False when deleted.
    bool save_analysis(storage::Transaction& tx, const std::string& id, const Analysis& analysis);
    // The user who should get the ticket: its current assignee if any; else the active
    // moderator whose skills overlap `skills` most (fewest open tickets on ties, then the
    // longest-standing); else the least-loaded active admin; else any active moderator.
    std::optional<User> pick_assignee(const std::string& id,
                                      const std::vector<std::string>& skills) const;
    // Assigns when unassigned. Returns the ticket's assignee after it, or nullopt when the
    // ticket no longer exists.
    std::optional<std::string> assign_if_unassigned(storage::Transaction& tx, const std::string& id,
                                                    const std::string& user_id);
    std::optional<Reply> load_reply(const std::string& reply_id) const;

  private:
    Ticket visible(storage::Transaction& tx, const Principal& who, const std::string& id) const;
    // Throws rate_limited when `user_id` wrote `limit` rows in the last day by `sql`
    // (count(*), min(created_at) of the newest $3 rows of <user> $1 with created_at > $2).
    void check_quota(std::string_view sql, const std::string& user_id, int limit,
                     std::string_view what) const;
    std::int64_t now_ms() const;

    storage::Database& db_;
    engine::Engine& engine_;
    TicketLimits limits_;
    TicketPosts posts_;
};

// Records a change of `ticket` for the live feed, in the transaction that made it.
void record_change(storage::Transaction& tx, const Ticket& ticket, std::string_view kind,
                   std::int64_t now);

}  // namespace cairn::ticket
