#pragma once

#include <atomic>
#include <cstdint>

namespace cairn::engine {

// The engine's source of time. Retries, sleeps, leases and timeouts read a Clock so
// that tests move time forward instead of sleeping. Implementations are thread-safe.
class Clock {
  public:
    virtual ~Clock() = default;
    // Epoch milliseconds.
    virtual std::int64_t now_ms() const = 0;
};

// Wall-clock time, plus `skew_ms` (0 but in tests of clock skew between machines).
class SystemClock final : public Clock {
  public:
    explicit SystemClock(std::int64_t skew_ms = 0) : skew_ms_(skew_ms) {}
    std::int64_t now_ms() const override;

  private:
    std::int64_t skew_ms_;
};

// Time that moves only when told to; for tests.
class ManualClock final : public Clock {
  public:
    explicit ManualClock(std::int64_t start_ms) : now_(start_ms) {}
    std::int64_t now_ms() const override { return now_.load(); }
    void set(std::int64_t ms) { now_.store(ms); }
    void advance(std::int64_t ms) { now_.fetch_add(ms); }

  private:
    std::atomic<std::int64_t> now_;
};

}  // namespace cairn::engine
