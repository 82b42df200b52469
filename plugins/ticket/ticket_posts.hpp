#pragma once

#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>

#include "plugins/ticket/auth.hpp"
#include "plugins/ticket/model.hpp"
#include "storage/write_batcher.hpp"

namespace cairn::storage {
class Database;
}
namespace cairn::engine {
class Engine;
}

namespace cairn::ticket {

// New tickets, written through the database's WriteBatcher so that posts made at once
// share a transaction and its statements: one statement checks every post's session, the
// events that start their workflows go in through Engine::send in the same transaction
// (on Postgres one statement for all), and the tickets and their change rows take one
// statement each. A post whose session has ended (logout, deactivation) writes nothing.
// Thread-safe. The destructor waits for the posts it queued, which refer to it.
class TicketPosts {
  public:
    // At most `max_queued` posts wait for the writer; submit() refuses more.
    TicketPosts(storage::Database& db, engine::Engine& engine, int max_queued);
    ~TicketPosts();
    TicketPosts(const TicketPosts&) = delete;
    TicketPosts& operator=(const TicketPosts&) = delete;

    // What a post comes to: the ticket as written, or the error (ApiError unauthorized
    // when the session has ended).
    struct Outcome {
        std::optional<Ticket> ticket;
        std::exception_ptr error;
    };
    // Writes `ticket` (validated, with its id) for `who`, with its event `ticket/created`;
    // returns once it is committed or refused.
    Outcome write(const Principal& who, Ticket ticket);
    // The same without waiting: `done` gets the outcome once, on the thread that wrote it
    // (maybe this one, before this returns), and must not block. With `max_queued` posts
    // waiting, `done` gets ApiError unavailable at once and nothing is written.
    void submit(const Principal& who, Ticket ticket, std::function<void(Outcome)> done);

  private:
    storage::Database& db_;
    std::unique_ptr<storage::WriteKind> kind_;
    std::mutex mu_;
    std::condition_variable idle_;  // queued_ fell to 0
    const int max_queued_;
    int queued_ = 0;  // posts submitted and not yet done; guarded by mu_
};

}  // namespace cairn::ticket
