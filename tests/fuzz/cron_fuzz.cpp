// libFuzzer target: the cron expression parser and the tick search on what it accepts.
// Any exception but std::invalid_argument, a crash, a sanitizer report or a tick that is
// not after the time asked about is a finding. Seeds in tests/fuzz/cron/.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string_view>

#include "engine/cron.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    try {
        const auto cron = cairn::engine::CronSchedule::parse(text);
        // Around 2026, and across a year: each tick strictly after the one before.
        std::int64_t t = 1'790'000'000'000;
        for (int i = 0; i < 4; ++i) {
            const auto next = cron.next_after(t);
            if (!next) break;
            if (*next <= t) std::abort();
            t = *next;
        }
    } catch (const std::invalid_argument&) {
    }
    return 0;
}
