// Retention: ended runs past their age are deleted with everything recorded for them, and
// events no run needs, in bounded batches (each a transaction of its own).

#include <fmt/format.h>

#include "storage/run_store.hpp"

namespace cairn::storage {

namespace {

// `statuses` as a SQL list of literals; only the three ended statuses are accepted.
std::string ended_statuses(std::span<const std::string> statuses) {
    std::string out;
    for (const auto& s : statuses) {
        if (s != "completed" && s != "failed" && s != "cancelled")
            throw std::invalid_argument(
                fmt::format("'{}' is not an ended status (completed, failed, cancelled)", s));
        out += fmt::format("{}'{}'", out.empty() ? "" : ", ", s);
    }
    if (out.empty()) throw std::invalid_argument("no status to collect");
    return out;
}

}  // namespace

std::int64_t RunStore::count_collectable(std::int64_t ended_before,
                                         std::span<const std::string> statuses) {
    return db_
        .read(fmt::format("SELECT COUNT(*) FROM runs WHERE status IN ({}) AND ended_at < $1",
                          ended_statuses(statuses)),
              ended_before)
        .front()
        .get<std::int64_t>(0);
}

RunStore::Collected RunStore::collect(std::int64_t ended_before,
                                      std::span<const std::string> statuses, int limit) {
    const std::string sql = fmt::format(
        "SELECT id, event_id FROM runs WHERE status IN ({}) AND ended_at < $1 ORDER BY id "
        "LIMIT $2",
        ended_statuses(statuses));
    return db_.transact([&](Transaction& tx) {
        Collected out;
        // One collector at a time on Postgres: two would lock the same rows in turn.
        if (tx.backend() == Backend::postgres &&
            !tx.exec("SELECT pg_try_advisory_xact_lock(7301)").front().get<bool>(0))
            return out;
        std::vector<std::string> runs, events;
        for (auto row : tx.exec(sql, ended_before, limit)) {
            runs.push_back(row.get<std::string>(0));
            events.push_back(row.get<std::string>(1));
        }
        for (const auto& id : runs) {
            // Children of both backends' tables: Postgres's steps and attempts have no key
            // to runs, and SQLite's cascade would cost the same statements.
            for (const char* table : {"step_attempts", "steps", "waits", "queue"})
                tx.exec(fmt::format("DELETE FROM {} WHERE run_id = $1", table), id);
            tx.exec("DELETE FROM runs WHERE id = $1", id);
        }
        out.runs = static_cast<std::int64_t>(runs.size());
        for (const auto& id : events) {
            out.events += tx.exec(
                                "DELETE FROM events WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM "
                                "runs WHERE runs.event_id = events.id)",
                                id)
                              .affected();
        }
        // Events that started no run (nor resume one now), past the same age.
        if (out.runs < limit) {
            out.events += tx.exec(
                                "DELETE FROM events WHERE id IN (SELECT e.id FROM events e WHERE "
                                "e.received_at < $1 AND NOT EXISTS (SELECT 1 FROM runs r WHERE "
                                "r.event_id = e.id) LIMIT $2)",
                                ended_before, limit)
                              .affected();
        }
        return out;
    });
}

}  // namespace cairn::storage
