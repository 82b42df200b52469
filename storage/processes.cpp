// The processes table: which process executes which workflows, for listings that show the
// workflows of every process on the database.

#include "storage/run_store.hpp"

namespace cairn::storage {

void RunStore::register_process(const ProcessRecord& p, std::int64_t forget_before) {
    db_.transact([&](Transaction& tx) {
        tx.exec("DELETE FROM processes WHERE heartbeat_at < $1 OR id = $2", forget_before, p.id);
        tx.exec(
            "INSERT INTO processes (id, name, started_at, heartbeat_at, stopped_at, workflows) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            p.id, p.name, p.started_at, p.heartbeat_at, p.stopped_at, p.workflows);
    });
}

bool RunStore::heartbeat(std::string_view process_id, std::int64_t now) {
    return db_.exec("UPDATE processes SET heartbeat_at = $2 WHERE id = $1", process_id, now)
               .affected() == 1;
}

void RunStore::process_stopped(std::string_view process_id, std::int64_t now) {
    db_.exec("UPDATE processes SET stopped_at = $2, heartbeat_at = $2 WHERE id = $1", process_id,
             now);
}

std::vector<ProcessRecord> RunStore::processes() {
    std::vector<ProcessRecord> out;
    for (auto row :
         db_.read("SELECT id, name, started_at, heartbeat_at, stopped_at, workflows FROM processes "
                  "ORDER BY heartbeat_at DESC, id")) {
        out.push_back(ProcessRecord{row.get<std::string>(0), row.get<std::string>(1),
                                    row.get<std::int64_t>(2), row.get<std::int64_t>(3),
                                    row.get_opt<std::int64_t>(4), row.get<std::string>(5)});
    }
    return out;
}

}  // namespace cairn::storage
