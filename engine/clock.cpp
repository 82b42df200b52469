#include "engine/clock.hpp"

#include "common/time.hpp"

namespace cairn::engine {

std::int64_t SystemClock::now_ms() const {
    return cairn::now_ms() + skew_ms_;
}

}  // namespace cairn::engine
