// What is kept per workflow rather than per run: pauses and cron schedules.

#include "storage/run_store.hpp"

namespace cairn::storage {

bool RunStore::pause_workflow(std::string_view workflow_id, std::int64_t now) {
    return db_.exec(
                  "INSERT INTO workflow_pauses (workflow_id, paused_at) VALUES ($1, $2) "
                  "ON CONFLICT DO NOTHING",
                  workflow_id, now)
               .affected() == 1;
}

bool RunStore::resume_workflow(std::string_view workflow_id) {
    return db_.transact([&](Transaction& tx) {
        if (tx.exec("DELETE FROM workflow_pauses WHERE workflow_id = $1", workflow_id).affected() !=
            1)
            return false;
        notify(tx);  // its queued runs are due: wake the workers of every process
        return true;
    });
}

std::map<std::string, std::int64_t> RunStore::paused_workflows() {
    std::map<std::string, std::int64_t> out;
    for (auto row : db_.read("SELECT workflow_id, paused_at FROM workflow_pauses"))
        out.emplace(row.get<std::string>(0), row.get<std::int64_t>(1));
    return out;
}

std::optional<std::int64_t> RunStore::schedule_start(std::string_view workflow_id,
                                                     std::string_view cron,
                                                     std::int64_t last_tick) {
    return db_.transact([&](Transaction& tx) -> std::optional<std::int64_t> {
        auto row =
            tx.exec("SELECT cron, last_tick FROM schedules WHERE workflow_id = $1", workflow_id);
        if (!row.empty() && row.front().get<std::string>(0) == cron)
            return row.front().get<std::int64_t>(1);
        // New, or its expression changed: ticks before now are not missed ones.
        tx.exec("DELETE FROM schedules WHERE workflow_id = $1", workflow_id);
        tx.exec("INSERT INTO schedules (workflow_id, cron, last_tick) VALUES ($1, $2, $3)",
                workflow_id, cron, last_tick);
        return std::nullopt;
    });
}

void RunStore::schedule_fired(std::string_view workflow_id, std::int64_t tick) {
    db_.exec("UPDATE schedules SET last_tick = $2 WHERE workflow_id = $1 AND last_tick < $2",
             workflow_id, tick);
}

}  // namespace cairn::storage
