#include "engine/database_clock.hpp"

#include <spdlog/spdlog.h>

#include <cstdlib>
#include <exception>
#include <limits>

#include "common/periodic.hpp"
#include "storage/database.hpp"

namespace cairn::engine {
namespace {
constexpr auto kResyncEvery = std::chrono::minutes(1);
constexpr std::int64_t kWarnOffsetMs = 1000;
}  // namespace

DatabaseClock::DatabaseClock(storage::Database& db, const Clock& local) : db_(db), local_(local) {
    if (db_.backend() != storage::Backend::postgres) return;
    sync();
    if (std::llabs(offset_ms()) >= kWarnOffsetMs)
        spdlog::warn(
            "this machine's clock is {} ms {} the database's; the engine keeps "
            "the database's time",
            std::llabs(offset_ms()), offset_ms() > 0 ? "behind" : "ahead of");
    resync_ = std::make_unique<Periodic>("cairn-clock", kResyncEvery, [this] { sync(); });
}

DatabaseClock::~DatabaseClock() = default;

void DatabaseClock::sync() {
    try {
        std::int64_t best_rtt = std::numeric_limits<std::int64_t>::max(), offset = 0;
        for (int i = 0; i < 3; ++i) {
            const std::int64_t before = local_.now_ms();
            const auto db_now =
                db_.read("SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)")
                    .front()
                    .get<std::int64_t>(0);
            const std::int64_t after = local_.now_ms();
            if (after - before < best_rtt) {
                best_rtt = after - before;
                offset = db_now - (before + after) / 2;
            }
        }
        offset_.store(offset, std::memory_order_relaxed);
    } catch (const std::exception& e) {  // a Periodic's function must not throw
        spdlog::warn("reading the database's clock: {}; keeping an offset of {} ms", e.what(),
                     offset_ms());
    }
}

}  // namespace cairn::engine
