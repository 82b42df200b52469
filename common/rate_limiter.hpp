#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace cairn {

// Token buckets keyed by string ("ip:1.2.3.4", "login:a@b.c|1.2.3.4"): `per_minute`
// tokens refill evenly over a minute, and a full bucket allows a burst of that many.
// At most 100,000 buckets are kept: past that, the full ones (which behave like new) are
// forgotten. `per_minute` 0 turns the limiter off. Thread-safe.
class RateLimiter {
  public:
    explicit RateLimiter(int per_minute) : per_minute_(per_minute) {}
    // Takes one token for `key`, or returns the seconds until one is available.
    std::optional<int> take(const std::string& key, std::int64_t now_ms);
    // The seconds until `key` has a token, without taking it; nullopt when it has one.
    std::optional<int> check(const std::string& key, std::int64_t now_ms);
    // Refills `key`'s bucket (a success that should not count against later attempts).
    void reset(const std::string& key);
    int per_minute() const { return per_minute_; }

  private:
    struct Bucket {
        double tokens;
        std::int64_t at_ms;
    };
    // The bucket for `key`, refilled to `now_ms`; mutex_ held.
    Bucket& refilled(const std::string& key, std::int64_t now_ms);
    std::optional<int> wait_s(const Bucket& b) const;

    int per_minute_;
    std::mutex mutex_;
    std::unordered_map<std::string, Bucket> buckets_;  // guarded by mutex_
};

}  // namespace cairn
