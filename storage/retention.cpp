// Retention: ended runs past their age are deleted with everything recorded for them, and
// events no run needs, in bounded batches (each a transaction of its own).
//
// A run ended before a time was created before it, and run ids are UUIDv7s of their
// creation time: bounding the id keeps the scan of the (status, id) index to runs that
// old, rather than every ended run. (Ids never go backwards in a process, so an id may be
// a little later than its run's creation after a clock step: such a run is kept a
// little longer.)

#include <fmt/format.h>

#include <optional>

#include "common/ids.hpp"
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

// Deletes the event unless a run (or a batch run) still refers to it, with the record of the
// starts it skipped; 1 when deleted.
std::int64_t delete_unreferenced(Transaction& tx, const std::string& id) {
    const std::int64_t n =
        tx.exec(
              "DELETE FROM events WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM runs WHERE "
              "runs.event_id = events.id) AND NOT EXISTS (SELECT 1 FROM run_events b WHERE "
              "b.event_id = events.id)",
              id)
            .affected();
    if (n > 0) tx.exec("DELETE FROM event_skips WHERE event_id = $1", id);
    return n;
}

}  // namespace

std::int64_t RunStore::count_collectable(std::int64_t ended_before,
                                         std::span<const std::string> statuses) {
    return db_
        .read(fmt::format("SELECT COUNT(*) FROM runs WHERE status IN ({}) AND ended_at < $1 "
                          "AND id < $2",
                          ended_statuses(statuses)),
              ended_before, id_floor(ended_before))
        .front()
        .get<std::int64_t>(0);
}

RunStore::Collected RunStore::collect(std::int64_t ended_before,
                                      std::span<const std::string> statuses, int limit) {
    const std::string sql = fmt::format(
        "SELECT id, event_id FROM runs WHERE status IN ({}) AND ended_at < $1 AND id < $3 "
        "ORDER BY id LIMIT $2",
        ended_statuses(statuses));
    const auto collected = db_.transact([&](Transaction& tx) -> std::optional<Collected> {
        // One collector at a time on Postgres: two would lock the same rows in turn.
        if (tx.backend() == Backend::postgres &&
            !tx.exec("SELECT pg_try_advisory_xact_lock(7301)").front().get<bool>(0))
            return std::nullopt;
        Collected batch;
        std::vector<std::string> runs, events;
        for (auto row : tx.exec(sql, ended_before, limit, id_floor(ended_before))) {
            runs.push_back(row.get<std::string>(0));
            events.push_back(row.get<std::string>(1));
        }
        for (const auto& id : runs) {
            // Children of both backends' tables: Postgres's steps and attempts have no key
            // to runs, and SQLite's cascade would cost the same statements.
            for (const char* table : {"step_attempts", "steps", "waits", "queue", "run_events"})
                tx.exec(fmt::format("DELETE FROM {} WHERE run_id = $1", table), id);
            tx.exec("DELETE FROM runs WHERE id = $1", id);
        }
        batch.runs = static_cast<std::int64_t>(runs.size());
        for (const auto& id : events) batch.events += delete_unreferenced(tx, id);
        return batch;
    });
    if (!collected) return {};  // another process is collecting
    Collected out = *collected;
    if (out.runs == limit) return out;
    // Flow control's key state idle since before the cut-off (no slot taken, its window or
    // rate over, no unfinished run pending on it), in the same tail pass.
    db_.exec(
        "DELETE FROM flow_state WHERE n <= 0 AND COALESCE(at, 0) < $1 AND (run_id IS NULL OR "
        "NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = flow_state.run_id AND r.status IN "
        "('queued', 'running', 'sleeping', 'waiting')))",
        ended_before);
    // Events that started no run, past the same age. Found by a read (events has no index
    // on received_at, so it may scan the table; on SQLite a reader does not hold up
    // writers), then deleted unless a run took the event meanwhile.
    std::vector<std::string> orphans;
    for (auto row : db_.read(
             "SELECT e.id FROM events e WHERE e.received_at < $1 AND NOT EXISTS (SELECT 1 FROM "
             "runs r WHERE r.event_id = e.id) AND NOT EXISTS (SELECT 1 FROM run_events b "
             "WHERE b.event_id = e.id) LIMIT $2",
             ended_before, limit))
        orphans.push_back(row.get<std::string>(0));
    if (orphans.empty()) return out;
    out.events += db_.transact([&](Transaction& tx) {
        std::int64_t n = 0;
        for (const auto& id : orphans) n += delete_unreferenced(tx, id);
        return n;
    });
    return out;
}

}  // namespace cairn::storage
