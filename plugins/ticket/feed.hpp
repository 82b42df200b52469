#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "plugins/ticket/model.hpp"

namespace cairn::storage {
class Database;
}
namespace cairn::engine {
class Clock;
}

namespace cairn::ticket {

// The live feed of ticket changes behind the WebSocket: it follows the ticket_changes
// table (written by every process on the database, in the transaction of each change),
// so a change made by a worker in another process reaches clients too.
//
// One poll of the database serves every connection of the process: poll() reads new
// changes at most every `interval`, keeps the last few thousand in memory, and each
// connection reads past its own position. Reading by (at, id) with an overlap of a few
// seconds catches changes that commit late; ids already seen are skipped. Thread-safe.
class ChangeFeed {
  public:
    struct Change {
        std::uint64_t seq;  // position in this process's feed
        std::string kind;   // created, updated, replied, deleted
        std::string ticket_id;
        std::string owner_id;
        std::optional<std::string> assigned_to;
        json message;  // what clients receive
    };

    ChangeFeed(storage::Database& db, const engine::Clock& clock) : db_(db), clock_(clock) {}

    // The position of the newest change: a new connection starts there.
    std::uint64_t head();
    // Changes after `after`, reading the database first when the last poll is old enough.
    std::vector<Change> since(std::uint64_t after);

  private:
    void poll_locked(std::int64_t now);

    storage::Database& db_;
    const engine::Clock& clock_;
    std::mutex mutex_;
    // Guarded by mutex_:
    std::deque<Change> recent_;
    std::uint64_t next_seq_ = 1;
    std::int64_t cursor_at_ = -1;  // epoch ms of the newest change read; -1 before the first poll
    std::deque<std::pair<std::int64_t, std::string>> seen_;  // (at, id) within the overlap
    std::int64_t last_poll_ = 0;
    std::int64_t last_prune_ = 0;
};

}  // namespace cairn::ticket
