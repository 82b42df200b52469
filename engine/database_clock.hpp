#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "engine/clock.hpp"

namespace cairn {
class Periodic;
}
namespace cairn::storage {
class Database;
}

namespace cairn::engine {

// The machine's clock corrected to the database server's. Every time the engine writes —
// lease expiries, due times, run and step timestamps — then reads one clock across
// workers on different machines: a worker whose clock runs fast cannot take runs whose
// lease is live, and one whose clock runs slow does not write leases that others see as
// already expired.
//
// On Postgres the offset is measured with `clock_timestamp()` when constructed and every
// minute after (the best of three round trips; its error is half the round trip). SQLite
// is a file on one machine, whose processes share its clock: the offset stays 0.
class DatabaseClock final : public Clock {
  public:
    // `local` is the machine's clock; it must outlive this.
    DatabaseClock(storage::Database& db, const Clock& local);
    ~DatabaseClock() override;
    DatabaseClock(const DatabaseClock&) = delete;
    DatabaseClock& operator=(const DatabaseClock&) = delete;

    std::int64_t now_ms() const override {
        return local_.now_ms() + offset_.load(std::memory_order_relaxed);
    }
    // The database's clock minus the local one, as last measured.
    std::int64_t offset_ms() const { return offset_.load(std::memory_order_relaxed); }
    // Measures the offset again; keeps the last one when the database does not answer.
    void sync();

  private:
    storage::Database& db_;
    const Clock& local_;
    std::atomic<std::int64_t> offset_{0};
    std::unique_ptr<Periodic> resync_;  // last: its thread calls sync()
};

}  // namespace cairn::engine
