#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "plugins/ticket/model.hpp"

namespace cairn::storage {
class Database;
class Row;
}  // namespace cairn::storage
namespace cairn::engine {
class Clock;
}

namespace cairn::ticket {

// The live feed of ticket changes behind the WebSocket: it follows the ticket_changes
// table (written by every process on the database, in the transaction of each change),
// so a change made by a worker in another process reaches clients too.
//
// One poll of the database serves every connection of the process: a poll reads new
// changes at most every 200 ms, keeps the last few thousand in memory, and each connection
// reads past its own position. Rows are read by their database sequence (keyset pages), so
// a poll always moves on however many changes share a millisecond. On Postgres a sequence
// number is taken at insert and becomes visible at commit, so a number skipped over is a
// transaction still in flight (or rolled back): it is looked for again on each poll for a
// minute, and delivered when it commits. Thread-safe.
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
    // Appends the change in row `r` (kSelect's columns) to recent_ unless it is gone.
    void add_locked(const storage::Row& r);

    storage::Database& db_;
    const engine::Clock& clock_;
    std::mutex mutex_;
    // Guarded by mutex_:
    std::deque<Change> recent_;
    std::uint64_t next_seq_ = 1;
    std::int64_t cursor_ = -1;  // the highest database sequence read; -1 before the first poll
    std::map<std::int64_t, std::int64_t> holes_;  // sequence skipped over -> when first seen
    std::int64_t last_poll_ = 0;
    std::int64_t last_prune_ = 0;
};

}  // namespace cairn::ticket
