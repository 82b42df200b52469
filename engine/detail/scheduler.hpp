#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "engine/cron.hpp"
#include "engine/detail/runtime.hpp"

namespace cairn::engine::detail {

// Starts the runs of cron workflows. Each schedule keeps its last fired tick (in the
// schedules table, for restarts); at each check the latest tick that is due and not yet
// fired starts one run, so ticks missed while no process ran fire once, as the latest.
// Every process with the workflow fires each tick: the tick's event has the idempotency
// key "cron/<workflow>/<tick ms>", so one run starts per tick. Thread-safe.
class Scheduler {
  public:
    explicit Scheduler(Runtime& rt) : rt_(rt) {}

    // Fires the due ticks at the clock's time; returns how many runs started. Reads the
    // schedules' last ticks on first use: a schedule new to the database (or whose
    // expression changed) counts nothing before now as missed.
    int fire_due();

  private:
    struct Schedule {
        CronSchedule cron;
        std::string version;
        std::int64_t last_tick;
    };
    void load();

    Runtime& rt_;
    std::mutex mu_;
    bool loaded_ = false;                    // guarded by mu_
    std::map<std::string, Schedule> by_id_;  // guarded by mu_
};

}  // namespace cairn::engine::detail
