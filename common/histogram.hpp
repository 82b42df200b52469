#pragma once

#include <array>
#include <cstdint>
#include <mutex>

namespace cairn {

// A Prometheus-style histogram of durations in seconds with fixed buckets. Thread-safe.
class Histogram {
  public:
    static constexpr std::array<double, 14> kBounds = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1,  0.25,
                                                       0.5,   1.0,   2.5,  5.0,   10.0, 30.0, 60.0};
    struct Snapshot {
        std::array<std::uint64_t, kBounds.size()> cumulative{};  // count <= each bound
        std::uint64_t count = 0;
        double sum = 0;
    };

    void observe(double seconds) {
        std::lock_guard lock(mu_);
        for (std::size_t i = 0; i < kBounds.size(); ++i) {
            if (seconds <= kBounds[i]) ++s_.cumulative[i];
        }
        ++s_.count;
        s_.sum += seconds;
    }
    Snapshot snapshot() const {
        std::lock_guard lock(mu_);
        return s_;
    }

  private:
    mutable std::mutex mu_;
    Snapshot s_;  // guarded by mu_
};

}  // namespace cairn
