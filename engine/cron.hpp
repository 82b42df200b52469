#pragma once

#include <bitset>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace date {
class time_zone;
}

namespace cairn::engine {

// A cron schedule: five fields (minute hour day-of-month month day-of-week) with lists,
// ranges, steps and names (JAN-DEC, SUN-SAT; 0 and 7 are Sunday), or a macro (@yearly,
// @annually, @monthly, @weekly, @daily, @midnight, @hourly), optionally after "TZ=Zone "
// (an IANA zone; UTC when absent). As in Vixie cron, when both day fields are restricted a
// day matches either.
//
// Ticks are the local times that match, each mapped to one instant: a local time that
// occurs twice (clocks set back) at its first occurrence; one that does not occur (clocks
// set forward) at the end of the gap, where it coincides with the gap's end and so is one
// tick with it. So a skipped local hour neither runs twice nor never.
class CronSchedule {
  public:
    // Throws std::invalid_argument naming the expression and what is wrong with it,
    // including an expression that never matches (e.g. 30 February).
    static CronSchedule parse(std::string_view text);

    // The first tick strictly after `after_ms` (epoch ms); nullopt when none comes within
    // eight years.
    std::optional<std::int64_t> next_after(std::int64_t after_ms) const;

    const std::string& text() const { return text_; }

  private:
    CronSchedule() = default;

    std::string text_;
    const date::time_zone* zone_ = nullptr;  // nullptr: UTC
    std::bitset<60> minutes_;
    std::bitset<24> hours_;
    std::bitset<32> days_;     // 1..31
    std::bitset<13> months_;   // 1..12
    std::bitset<7> weekdays_;  // 0 = Sunday
    bool days_restricted_ = false;
    bool weekdays_restricted_ = false;
};

}  // namespace cairn::engine
