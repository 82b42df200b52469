#include "common/rate_limiter.hpp"

#include <algorithm>
#include <cmath>

namespace cairn {
namespace {
constexpr std::size_t kMaxBuckets = 100'000;
}

RateLimiter::Bucket& RateLimiter::refilled(const std::string& key, std::int64_t now_ms) {
    const double capacity = per_minute_;
    const double per_ms = capacity / 60'000.0;
    if (buckets_.size() >= kMaxBuckets) {
        std::erase_if(buckets_, [&](const auto& kv) {
            return kv.second.tokens + static_cast<double>(now_ms - kv.second.at_ms) * per_ms >=
                   capacity;
        });
    }
    auto [it, fresh] = buckets_.try_emplace(key, Bucket{capacity, now_ms});
    Bucket& b = it->second;
    b.tokens = std::min(capacity, b.tokens + static_cast<double>(now_ms - b.at_ms) * per_ms);
    b.at_ms = now_ms;
    return b;
}

std::optional<int> RateLimiter::wait_s(const Bucket& b) const {
    if (b.tokens >= 1.0) return std::nullopt;
    const double per_s = per_minute_ / 60.0;
    return std::max(1, static_cast<int>(std::ceil((1.0 - b.tokens) / per_s)));
}

std::optional<int> RateLimiter::take(const std::string& key, std::int64_t now_ms) {
    if (per_minute_ <= 0) return std::nullopt;
    std::lock_guard lock(mutex_);
    Bucket& b = refilled(key, now_ms);
    if (auto wait = wait_s(b)) return wait;
    b.tokens -= 1.0;
    return std::nullopt;
}

std::optional<int> RateLimiter::check(const std::string& key, std::int64_t now_ms) {
    if (per_minute_ <= 0) return std::nullopt;
    std::lock_guard lock(mutex_);
    return wait_s(refilled(key, now_ms));
}

void RateLimiter::reset(const std::string& key) {
    std::lock_guard lock(mutex_);
    buckets_.erase(key);
}

}  // namespace cairn
