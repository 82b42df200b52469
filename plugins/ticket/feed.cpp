#include "plugins/ticket/feed.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <ranges>

#include "common/time.hpp"
#include "engine/clock.hpp"
#include "storage/database.hpp"

namespace cairn::ticket {
namespace {
constexpr std::int64_t kPollMs = 200;
constexpr std::int64_t kPage = 1000;           // rows per read
constexpr int kPagesPerPoll = 10;              // the rest waits for the next poll
constexpr std::int64_t kHoleMs = 60'000;       // how long a skipped sequence is looked for
constexpr std::size_t kMaxHoles = 1000;        // the oldest are given up beyond this
constexpr std::size_t kKeep = 5000;            // changes kept in memory
constexpr std::int64_t kRetainMs = 3'600'000;  // rows kept in ticket_changes

// Columns 0..6 are the change, 7.. the ticket (kTicketColumns) when it still exists.
constexpr std::string_view kSelect =
    "SELECT c.seq, c.id, c.ticket_id, c.owner_id, c.assigned_to, c.kind, c.at, t.id, t.title, "
    "t.description, t.tags, t.status, t.priority, t.deadline, t.created_by, t.assigned_to, "
    "t.helpful_notes, t.related_skills, t.summary, t.run_id, t.created_at, t.updated_at "
    "FROM ticket_changes c LEFT JOIN tickets t ON t.id = c.ticket_id ";
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
    if (cursor_ >= 0 && now - last_poll_ < kPollMs) return;
    last_poll_ = now;
    if (cursor_ < 0) {  // the feed starts now; history is not replayed
        cursor_ = db_.read("SELECT COALESCE(MAX(seq), 0) FROM ticket_changes")
                      .front()
                      .get<std::int64_t>(0);
    }

    // Sequences skipped by an earlier page that have committed since.
    std::erase_if(holes_, [now](const auto& h) { return now - h.second > kHoleMs; });
    if (!holes_.empty()) {
        const auto keys = holes_ | std::views::keys;
        const auto rows = db_.read(
            fmt::format("{} WHERE c.seq IN ({}) ORDER BY c.seq", kSelect, fmt::join(keys, ",")));
        for (const auto& r : rows) {
            holes_.erase(r.get<std::int64_t>(0));
            add_locked(r);
        }
    }

    for (int page = 0; page < kPagesPerPoll; ++page) {
        const auto rows = db_.read(
            fmt::format("{} WHERE c.seq > $1 ORDER BY c.seq LIMIT {}", kSelect, kPage), cursor_);
        for (const auto& r : rows) {
            const auto seq = r.get<std::int64_t>(0);
            for (auto s = std::max(cursor_ + 1, seq - std::int64_t(kMaxHoles)); s < seq; ++s)
                holes_.emplace(s, now);
            cursor_ = seq;
            add_locked(r);
        }
        if (static_cast<std::int64_t>(rows.size()) < kPage) break;
    }
    while (holes_.size() > kMaxHoles) holes_.erase(holes_.begin());

    if (now - last_prune_ > 60'000) {
        last_prune_ = now;
        db_.exec("DELETE FROM ticket_changes WHERE at < $1", now - kRetainMs);
    }
}

void ChangeFeed::add_locked(const storage::Row& r) {
    Change c;
    c.seq = next_seq_;
    c.ticket_id = r.get<std::string>(2);
    c.owner_id = r.get<std::string>(3);
    c.assigned_to = r.get_opt<std::string>(4);
    c.kind = r.get<std::string>(5);
    json ticket = {{"id", c.ticket_id}};
    if (!r.is_null(7)) {
        const Ticket t = read_ticket(r, 7);
        ticket = to_json(t);
        c.assigned_to = t.assigned_to;
    } else if (c.kind != "deleted") {
        return;  // deleted since; its own "deleted" change follows
    }
    ++next_seq_;
    c.message = {{"type", "ticket." + c.kind},
                 {"ticket", std::move(ticket)},
                 {"at", format_rfc3339(r.get<std::int64_t>(6))}};
    recent_.push_back(std::move(c));
    if (recent_.size() > kKeep) recent_.pop_front();
}

}  // namespace cairn::ticket
