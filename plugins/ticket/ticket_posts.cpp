#include "plugins/ticket/ticket_posts.hpp"

#include <fmt/format.h>

#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "common/ids.hpp"
#include "engine/engine.hpp"
#include "plugins/ticket/errors.hpp"
#include "storage/database.hpp"

namespace cairn::ticket {

namespace {

struct Post final : storage::BatchedWrite {
    Post(const storage::WriteKind& kind, const Principal& p, Ticket t)
        : BatchedWrite(kind), who(p), ticket(std::move(t)) {}
    Principal who;
    Ticket ticket;
    bool refused = false;  // the session had ended: nothing written
    std::function<void(TicketPosts::Outcome)> done;
};

// "($1, ..., $width), ($width+1, ...), ..." for `rows` rows: the text of `INSERT ...
// VALUES` or of `IN`, made once per shape and kept, since a batch's size changes.
const std::string& rows_text(std::size_t rows, std::size_t width) {
    static std::mutex mu;
    static std::map<std::pair<std::size_t, std::size_t>, std::string> texts;
    std::lock_guard lock(mu);
    std::string& out = texts[{rows, width}];
    if (out.empty()) {
        for (std::size_t r = 0; r < rows; ++r) {
            out += r == 0 ? "(" : ", (";
            for (std::size_t c = 0; c < width; ++c)
                out += fmt::format("{}${}", c == 0 ? "" : ", ", r * width + c + 1);
            out += ')';
        }
    }
    return out;
}

class PostKind final : public storage::WriteKind {
  public:
    explicit PostKind(engine::Engine& engine) : engine_(engine) {}

    void write(storage::Transaction& tx, std::span<storage::BatchedWrite* const> writes,
               std::size_t /*batch_size*/) const override {
        std::vector<Post*> posts;
        for (storage::BatchedWrite* w : writes) posts.push_back(static_cast<Post*>(w));
        std::vector<Post*> live = sessions_live(tx, posts);
        if (live.empty()) return;
        std::vector<engine::EventInput> events;
        for (const Post* p : live) {
            engine::EventInput e;
            e.name = "ticket/created";
            e.data = {{"ticket_id", p->ticket.id},
                      {"title", p->ticket.title},
                      {"created_by", p->ticket.created_by}};
            events.push_back(std::move(e));
        }
        // First the events: each ticket carries the id of the run its event started.
        const auto sent = engine_.send(tx, events);
        for (std::size_t i = 0; i < live.size(); ++i) {
            const auto& runs = sent[i].run_ids;
            live[i]->ticket.run_id = runs.empty() ? std::nullopt : std::optional(runs.front());
        }
        insert_tickets(tx, live);
        insert_changes(tx, live);
    }

  private:
    // The posts whose session is live (its user active, the session not revoked); marks the
    // others refused. One statement for all of them.
    static std::vector<Post*> sessions_live(storage::Transaction& tx, std::vector<Post*>& posts) {
        std::vector<storage::Value> ids;
        for (const Post* p : posts) ids.emplace_back(p->who.session_id);
        const std::string sql = fmt::format(
            "SELECT s.id, s.user_id FROM auth_sessions s JOIN users u ON u.id = s.user_id "
            "WHERE s.id IN {} AND u.active <> 0 AND s.revoked_at IS NULL",
            rows_text(1, ids.size()));
        std::map<std::string, std::string> live;  // session -> user
        for (auto row : tx.exec_values(sql, ids))
            live.emplace(row.get<std::string>(0), row.get<std::string>(1));
        std::vector<Post*> out;
        for (Post* p : posts) {
            const auto it = live.find(p->who.session_id);
            p->refused = it == live.end() || it->second != p->who.user_id;
            if (!p->refused) out.push_back(p);
        }
        return out;
    }

    static void insert_tickets(storage::Transaction& tx, const std::vector<Post*>& posts) {
        std::vector<storage::Value> values;
        for (const Post* p : posts) {
            const Ticket& t = p->ticket;
            for (storage::Value v :
                 {storage::to_value(t.id), storage::to_value(t.title),
                  storage::to_value(t.description), storage::to_value(string_array(t.tags).dump()),
                  storage::to_value("open"), storage::to_value(t.deadline),
                  storage::to_value(t.created_by), storage::to_value("[]"),
                  storage::to_value(t.run_id), storage::to_value(t.created_at),
                  storage::to_value(t.updated_at)})
                values.push_back(std::move(v));
        }
        tx.exec_values(fmt::format("INSERT INTO tickets (id, title, description, tags, status, "
                                   "deadline, created_by, related_skills, run_id, created_at, "
                                   "updated_at) VALUES {}",
                                   rows_text(posts.size(), 11)),
                       values);
    }

    static void insert_changes(storage::Transaction& tx, const std::vector<Post*>& posts) {
        std::vector<storage::Value> values;
        for (const Post* p : posts) {
            const Ticket& t = p->ticket;
            for (storage::Value v :
                 {storage::to_value(new_id_at(t.created_at)), storage::to_value(t.id),
                  storage::to_value(t.created_by), storage::to_value(t.assigned_to),
                  storage::to_value("created"), storage::to_value(t.created_at)})
                values.push_back(std::move(v));
        }
        tx.exec_values(fmt::format("INSERT INTO ticket_changes (id, ticket_id, owner_id, "
                                   "assigned_to, kind, at) VALUES {}",
                                   rows_text(posts.size(), 6)),
                       values);
    }

    engine::Engine& engine_;
};

TicketPosts::Outcome outcome_of(const Post& p) {
    if (p.error) return {std::nullopt, p.error};
    if (p.refused) {
        return {std::nullopt, std::make_exception_ptr(ApiError(
                                  ErrorCode::unauthorized, "the session has ended; log in again"))};
    }
    return {p.ticket, nullptr};
}

}  // namespace

TicketPosts::TicketPosts(storage::Database& db, engine::Engine& engine, int max_queued)
    : db_(db), kind_(std::make_unique<PostKind>(engine)), max_queued_(max_queued) {}

TicketPosts::~TicketPosts() {
    std::unique_lock lock(mu_);
    idle_.wait(lock, [this] { return queued_ == 0; });
}

TicketPosts::Outcome TicketPosts::write(const Principal& who, Ticket ticket) {
    Post post(*kind_, who, std::move(ticket));
    db_.writes().write(post);
    return outcome_of(post);
}

void TicketPosts::submit(const Principal& who, Ticket ticket, std::function<void(Outcome)> done) {
    {
        std::unique_lock lock(mu_);
        if (queued_ >= max_queued_) {
            lock.unlock();
            done({std::nullopt,
                  std::make_exception_ptr(ApiError(ErrorCode::unavailable,
                                                   "too many tickets are waiting to be written; "
                                                   "try again shortly",
                                                   nlohmann::json::array(), 1))});
            return;
        }
        ++queued_;
    }
    auto post = std::make_unique<Post>(*kind_, who, std::move(ticket));
    post->done = std::move(done);
    Post& p = *post;
    db_.writes().submit(p, [this, owned = std::shared_ptr<Post>(std::move(post))] {
        owned->done(outcome_of(*owned));
        std::lock_guard lock(mu_);
        if (--queued_ == 0) idle_.notify_all();
    });
}

}  // namespace cairn::ticket
