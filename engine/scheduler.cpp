#include "engine/detail/scheduler.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "common/time.hpp"
#include "engine/detail/json_text.hpp"

namespace cairn::engine::detail {

namespace {

// Enough for a schedule of every minute to catch up on two years of downtime.
constexpr int kMaxCatchUp = 2'000'000;

}  // namespace

void Scheduler::load() {
    const std::int64_t now = rt_.now();
    for (const Workflow* w : rt_.registry.all()) {
        if (!w->cron) continue;
        CronSchedule cron = CronSchedule::parse(*w->cron);
        const auto last = rt_.store.schedule_start(w->id, *w->cron, now);
        by_id_.emplace(w->id, Schedule{std::move(cron), w->version, last.value_or(now)});
    }
    loaded_ = true;
}

int Scheduler::fire_due() {
    std::lock_guard lock(mu_);
    if (!loaded_) load();
    const std::int64_t now = rt_.now();
    int fired = 0;
    for (auto& [id, s] : by_id_) {
        auto tick = s.cron.next_after(s.last_tick);
        if (!tick || *tick > now) continue;
        for (int i = 0; i < kMaxCatchUp; ++i) {
            const auto later = s.cron.next_after(*tick);
            if (!later || *later > now) break;
            tick = later;
        }
        storage::NewEvent e;
        e.name = "cairn/cron";
        e.data = dump(json{{"workflow", id},
                           {"cron", s.cron.text()},
                           {"tick", format_rfc3339(*tick)},
                           {"tick_ms", *tick}});
        e.idempotency_key = fmt::format("cron/{}/{}", id, *tick);
        e.ts = *tick;
        const storage::NewRun run{id, s.version, 0, std::nullopt, std::nullopt};
        const bool started = rt_.db.transact([&](storage::Transaction& tx) {
            const auto ins = rt_.store.insert_event(tx, e, std::span(&run, 1), now);
            if (ins.duplicate) return false;
            const Workflow* w = rt_.registry.find(id);
            if (w != nullptr && !w->cancel_on.empty() && !ins.run_ids.empty()) {
                rt_.intake.listen_for_cancel(tx, ins.run_ids[0], *w,
                                             json{{"id", ins.event_id},
                                                  {"name", e.name},
                                                  {"data", json::parse(e.data)},
                                                  {"ts", *tick}});
            }
            rt_.store.notify(tx);
            return true;
        });
        rt_.store.schedule_fired(id, *tick);
        s.last_tick = *tick;
        if (started) {
            ++fired;
            rt_.pool.announce();
            spdlog::info("cron: started {} for its tick at {}", id, format_rfc3339(*tick));
        }
    }
    return fired;
}

}  // namespace cairn::engine::detail
