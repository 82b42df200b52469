// Cron schedules: the syntax, the errors, and ticks across months, weekdays and the
// daylight-saving changes of two time zones.

#include "engine/cron.hpp"

#include <doctest/doctest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "common/time.hpp"

using cairn::engine::CronSchedule;

namespace {

std::int64_t at(const char* rfc3339) {
    return *cairn::parse_rfc3339(rfc3339);
}

// The next `n` ticks after `from`, as RFC 3339 UTC text without milliseconds.
std::vector<std::string> ticks(const char* expr, const char* from, int n) {
    const CronSchedule c = CronSchedule::parse(expr);
    std::vector<std::string> out;
    std::int64_t t = at(from);
    for (int i = 0; i < n; ++i) {
        t = *c.next_after(t);
        std::string text = cairn::format_rfc3339(t);
        out.push_back(text.substr(0, 19) + "Z");
    }
    return out;
}

std::string error_of(const char* expr) {
    try {
        CronSchedule::parse(expr);
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST_CASE("cron: fields, lists, ranges, steps, names and macros") {
    CHECK(ticks("*/15 * * * *", "2026-01-01T00:07:00Z", 3) ==
          std::vector<std::string>{"2026-01-01T00:15:00Z", "2026-01-01T00:30:00Z",
                                   "2026-01-01T00:45:00Z"});
    CHECK(ticks("0 9-17/4 * * MON-fri", "2026-12-04T12:00:00Z", 4) ==  // a Friday
          std::vector<std::string>{"2026-12-04T13:00:00Z", "2026-12-04T17:00:00Z",
                                   "2026-12-07T09:00:00Z", "2026-12-07T13:00:00Z"});
    CHECK(ticks("30 6 1,15 jan,JUL *", "2026-01-20T00:00:00Z", 3) ==
          std::vector<std::string>{"2026-07-01T06:30:00Z", "2026-07-15T06:30:00Z",
                                   "2027-01-01T06:30:00Z"});
    CHECK(ticks("@daily", "2026-03-01T10:00:00Z", 1) ==
          std::vector<std::string>{"2026-03-02T00:00:00Z"});
    CHECK(ticks("@hourly", "2026-03-01T10:00:00Z", 2) ==
          std::vector<std::string>{"2026-03-01T11:00:00Z", "2026-03-01T12:00:00Z"});
    CHECK(ticks("@weekly", "2026-12-07T00:00:00Z", 1) ==  // Sunday midnight
          std::vector<std::string>{"2026-12-13T00:00:00Z"});
    CHECK(ticks("0 0 * * 7", "2026-12-07T00:00:00Z", 1) ==  // 7 is Sunday too
          std::vector<std::string>{"2026-12-13T00:00:00Z"});
    // Both day fields restricted: either matches (the 13th, or a Friday).
    CHECK(ticks("0 0 13 * 5", "2026-11-10T00:00:00Z", 3) ==
          std::vector<std::string>{"2026-11-13T00:00:00Z", "2026-11-20T00:00:00Z",
                                   "2026-11-27T00:00:00Z"});
    // 29 February, three years ahead.
    CHECK(ticks("0 12 29 2 *", "2025-03-01T00:00:00Z", 1) ==
          std::vector<std::string>{"2028-02-29T12:00:00Z"});
    // A tick is strictly after the time given, including its own.
    CHECK(ticks("0 * * * *", "2026-01-01T05:00:00Z", 1) ==
          std::vector<std::string>{"2026-01-01T06:00:00Z"});
    CHECK(ticks("0 * * * *", "2026-01-01T04:59:59.999Z", 1) ==
          std::vector<std::string>{"2026-01-01T05:00:00Z"});
}

TEST_CASE("cron: time zones and daylight-saving changes in Europe/Paris and America/New_York") {
    // Paris: CET (+1) to CEST (+2) at 02:00 local on 29 March 2026; back at 03:00 on 25
    // October 2026.
    CHECK(ticks("TZ=Europe/Paris 0 3 * * *", "2026-03-27T12:00:00Z", 3) ==
          std::vector<std::string>{"2026-03-28T02:00:00Z", "2026-03-29T01:00:00Z",
                                   "2026-03-30T01:00:00Z"});
    // 02:30 does not exist on the 29th: it runs once, at the end of the gap (03:00 CEST).
    CHECK(ticks("TZ=Europe/Paris 30 2 * * *", "2026-03-28T12:00:00Z", 2) ==
          std::vector<std::string>{"2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"});
    // Every 30 minutes through the gap: 01:30 CET, then 03:00 CEST (02:00 and 02:30 fold
    // into it, one tick), 03:30.
    CHECK(ticks("TZ=Europe/Paris */30 * * * *", "2026-03-29T00:00:00Z", 3) ==
          std::vector<std::string>{"2026-03-29T00:30:00Z", "2026-03-29T01:00:00Z",
                                   "2026-03-29T01:30:00Z"});
    // 02:30 happens twice on 25 October: it runs at the first only.
    CHECK(ticks("TZ=Europe/Paris 30 2 * * *", "2026-10-24T12:00:00Z", 2) ==
          std::vector<std::string>{"2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"});
    // Hourly through the repeated hour: 02:00 CEST, then 03:00 CET (the second 02:00 is
    // the same local time again, not another tick).
    CHECK(ticks("TZ=Europe/Paris 0 * * * *", "2026-10-24T23:30:00Z", 3) ==
          std::vector<std::string>{"2026-10-25T00:00:00Z", "2026-10-25T02:00:00Z",
                                   "2026-10-25T03:00:00Z"});
    // New York: EST (-5) to EDT (-4) at 02:00 on 8 March 2026; back at 02:00 on 1 November.
    CHECK(ticks("TZ=America/New_York 30 2 * * *", "2026-03-07T12:00:00Z", 3) ==
          std::vector<std::string>{"2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z",
                                   "2026-03-10T06:30:00Z"});
    CHECK(ticks("TZ=America/New_York 30 1 * * *", "2026-10-31T12:00:00Z", 2) ==
          std::vector<std::string>{"2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"});
    CHECK(ticks("CRON_TZ=America/New_York 0 9 * * 1-5", "2026-12-05T00:00:00Z", 1) ==
          std::vector<std::string>{"2026-12-07T14:00:00Z"});
}

TEST_CASE("cron: a malformed expression is refused with a message naming it") {
    CHECK(error_of("0 3 * *").find("cron expression '0 3 * *': expected 5 fields") == 0);
    CHECK(error_of("61 * * * *").find("minute 61 is outside 0-59") != std::string::npos);
    CHECK(error_of("* 24 * * *").find("hour 24 is outside 0-23") != std::string::npos);
    CHECK(error_of("* * 0 * *").find("day of month 0 is outside 1-31") != std::string::npos);
    CHECK(error_of("* * * 13 *").find("month 13") != std::string::npos);
    CHECK(error_of("* * * * 8").find("day of week 8") != std::string::npos);
    CHECK(error_of("5-2 * * * *").find("goes backward") != std::string::npos);
    CHECK(error_of("*/0 * * * *").find("step '0'") != std::string::npos);
    CHECK(error_of("*/x * * * *").find("step 'x'") != std::string::npos);
    CHECK(error_of("a * * * *").find("'a' is not a minute") != std::string::npos);
    CHECK(error_of("1,,2 * * * *").find("'' is not a minute") != std::string::npos);
    CHECK(error_of("@reboot").find("unknown macro '@reboot'") != std::string::npos);
    CHECK(error_of("TZ=Mars/Olympus 0 3 * * *").find("unknown time zone 'Mars/Olympus'") !=
          std::string::npos);
    CHECK(error_of("0 0 30 2 *").find("never matches") != std::string::npos);
    CHECK(error_of("").find("expected 5 fields") != std::string::npos);
    CHECK(error_of(std::string(300, '*').c_str()).find("longer than 256") != std::string::npos);
    CHECK(error_of("0 3 * * * *").find("got 6") != std::string::npos);
    CHECK(error_of("-1 * * * *") != "");
    CHECK(error_of("1- * * * *") != "");
    CHECK(error_of("99999999999 * * * *") != "");
}
