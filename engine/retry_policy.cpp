#include <algorithm>
#include <cmath>

#include "cairn/workflow.hpp"

namespace cairn {

using std::chrono::milliseconds;

milliseconds RetryPolicy::ceiling(int failed_attempts) const {
    const double base = static_cast<double>(initial_delay.count()) *
                        std::pow(multiplier, std::max(0, failed_attempts - 1));
    const double capped = std::min(base, static_cast<double>(max_delay.count()));
    return milliseconds(static_cast<std::int64_t>(std::max(0.0, capped)));
}

milliseconds RetryPolicy::delay(int failed_attempts, std::mt19937_64& rng) const {
    const milliseconds top = ceiling(failed_attempts);
    if (!jitter || top.count() == 0) return top;
    return milliseconds(std::uniform_int_distribution<std::int64_t>(0, top.count())(rng));
}

}  // namespace cairn
