#include "plugins/ticket/feed.hpp"

#include <algorithm>
#include <set>

#include "common/time.hpp"
#include "engine/clock.hpp"
#include "storage/database.hpp"

namespace cairn::ticket {
namespace {
constexpr std::int64_t kPollMs = 200;
constexpr std::int64_t kOverlapMs = 3000;      // a change may commit this long after its `at`
constexpr std::size_t kKeep = 5000;            // changes kept in memory
constexpr std::int64_t kRetainMs = 3'600'000;  // rows kept in ticket_changes
}  // namespace

std::uint64_t ChangeFeed::head() {
    std::lock_guard lock(mutex_);
    poll_locked(clock_.now_ms());
    return next_seq_ - 1;
}

std::vector<ChangeFeed::Change> ChangeFeed::since(std::uint64_t after) {
    std::lock_guard lock(mutex_);
    poll_locked(clock_.now_ms());
    std::vector<Change> out;
    for (const auto& c : recent_)
        if (c.seq > after) out.push_back(c);
    return out;
}

void ChangeFeed::poll_locked(std::int64_t now) {
    if (cursor_at_ >= 0 && now - last_poll_ < kPollMs) return;
    last_poll_ = now;
    if (cursor_at_ < 0) cursor_at_ = now;  // the feed starts now; history is not replayed
    const auto rows = db_.read(
        "SELECT c.id, c.ticket_id, c.owner_id, c.assigned_to, c.kind, c.at, t.id, t.title, "
        "t.description, t.tags, t.status, t.priority, t.deadline, t.created_by, t.assigned_to, "
        "t.helpful_notes, t.related_skills, t.summary, t.run_id, t.created_at, t.updated_at "
        "FROM ticket_changes c LEFT JOIN tickets t ON t.id = c.ticket_id "
        "WHERE c.at >= $1 ORDER BY c.at, c.id LIMIT 5000",
        cursor_at_ - kOverlapMs);
    std::set<std::pair<std::int64_t, std::string>> seen(seen_.begin(), seen_.end());
    for (const auto& r : rows) {
        const auto at = r.get<std::int64_t>(5);
        auto id = r.get<std::string>(0);
        if (!seen.emplace(at, id).second) continue;
        seen_.emplace_back(at, id);
        cursor_at_ = std::max(cursor_at_, at);
        Change c;
        c.seq = next_seq_++;
        c.ticket_id = r.get<std::string>(1);
        c.owner_id = r.get<std::string>(2);
        c.assigned_to = r.get_opt<std::string>(3);
        c.kind = r.get<std::string>(4);
        json ticket = {{"id", c.ticket_id}};
        if (!r.is_null(6)) {
            const Ticket t = read_ticket(r, 6);  // columns 6.. are kTicketColumns
            ticket = to_json(t);
            c.assigned_to = t.assigned_to;
        } else if (c.kind != "deleted") {
            continue;  // deleted since; its own "deleted" change follows
        }
        c.message = {{"type", "ticket." + c.kind}, {"ticket", ticket}, {"at", format_rfc3339(at)}};
        recent_.push_back(std::move(c));
        if (recent_.size() > kKeep) recent_.pop_front();
    }
    while (!seen_.empty() && seen_.front().first < cursor_at_ - kOverlapMs) seen_.pop_front();
    if (now - last_prune_ > 60'000) {
        last_prune_ = now;
        db_.exec("DELETE FROM ticket_changes WHERE at < $1", now - kRetainMs);
    }
}

}  // namespace cairn::ticket
