#include "engine/cron.hpp"

#include <date/tz.h>
#include <fmt/format.h>

#include <array>
#include <cctype>
#include <charconv>
#include <stdexcept>
#include <vector>

namespace cairn::engine {

namespace {

constexpr std::size_t kMaxLength = 256;

struct Field {
    const char* name;
    int low;
    int high;
    std::array<std::string_view, 12> names;  // the value of names[i] is low + i
};

constexpr Field kMinute{"minute", 0, 59, {}};
constexpr Field kHour{"hour", 0, 23, {}};
constexpr Field kDay{"day of month", 1, 31, {}};
constexpr Field kMonth{
    "month",
    1,
    12,
    {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}};
constexpr Field kWeekday{"day of week", 0, 7, {"sun", "mon", "tue", "wed", "thu", "fri", "sat"}};

std::vector<std::string_view> split(std::string_view text, char sep) {
    std::vector<std::string_view> out;
    std::size_t from = 0;
    for (;;) {
        const std::size_t at = text.find(sep, from);
        out.push_back(text.substr(from, at - from));
        if (at == std::string_view::npos) return out;
        from = at + 1;
    }
}

std::vector<std::string_view> words(std::string_view text) {
    std::vector<std::string_view> out;
    std::size_t i = 0;
    while (i < text.size()) {
        while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
        const std::size_t start = i;
        while (i < text.size() && !std::isspace(static_cast<unsigned char>(text[i]))) ++i;
        if (i > start) out.push_back(text.substr(start, i - start));
    }
    return out;
}

// Sets the bits of one field's list ("1,5-10/2,*/15,MON"); throws a message without the
// expression (parse adds it).
template <std::size_t N>
void parse_field(std::string_view text, const Field& f, std::bitset<N>& bits) {
    auto number = [&](std::string_view s) {
        for (std::size_t i = 0; i < f.names.size() && !f.names[i].empty(); ++i) {
            if (s.size() == 3 &&
                std::equal(s.begin(), s.end(), f.names[i].begin(), [](char a, char b) {
                    return std::tolower(static_cast<unsigned char>(a)) == b;
                }))
                return f.low + static_cast<int>(i);
        }
        int v = 0;
        auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
        if (s.empty() || ec != std::errc{} || end != s.data() + s.size())
            throw std::invalid_argument(fmt::format("'{}' is not a {}", s, f.name));
        if (v < f.low || v > f.high)
            throw std::invalid_argument(
                fmt::format("{} {} is outside {}-{}", f.name, v, f.low, f.high));
        return v;
    };
    for (std::string_view item : split(text, ',')) {
        int step = 1;
        if (const auto slash = item.find('/'); slash != std::string_view::npos) {
            const std::string_view s = item.substr(slash + 1);
            auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), step);
            if (s.empty() || ec != std::errc{} || end != s.data() + s.size() || step < 1 ||
                step > f.high)
                throw std::invalid_argument(
                    fmt::format("step '{}' in the {} field must be 1-{}", s, f.name, f.high));
            item = item.substr(0, slash);
        }
        int low = f.low;
        int high = f.high;
        if (item != "*") {
            const auto dash = item.find('-');
            low = number(item.substr(0, dash));
            if (dash != std::string_view::npos)
                high = number(item.substr(dash + 1));
            else if (step == 1)
                high = low;  // "5" is 5; "5/10" is 5 to the end by 10
            if (high < low)
                throw std::invalid_argument(
                    fmt::format("range '{}' in the {} field goes backward", item, f.name));
        }
        for (int v = low; v <= high; v += step)
            bits.set(static_cast<std::size_t>(v % static_cast<int>(N)));
    }
}

}  // namespace

CronSchedule CronSchedule::parse(std::string_view text) {
    auto fail = [&](std::string_view why) {
        throw std::invalid_argument(
            fmt::format("cron expression '{}': {}", text.substr(0, kMaxLength), why));
    };
    if (text.size() > kMaxLength) fail(fmt::format("longer than {} characters", kMaxLength));
    CronSchedule c;
    c.text_ = std::string(text);
    std::vector<std::string_view> w = words(text);
    if (!w.empty() && (w[0].starts_with("TZ=") || w[0].starts_with("CRON_TZ="))) {
        const std::string zone(w[0].substr(w[0].find('=') + 1));
        try {
            if (zone != "UTC") c.zone_ = date::locate_zone(zone);
        } catch (const std::exception&) {
            fail(fmt::format("unknown time zone '{}'", zone));
        }
        w.erase(w.begin());
    }
    static constexpr std::array<std::pair<std::string_view, std::string_view>, 7> kMacros{{
        {"@yearly", "0 0 1 1 *"},
        {"@annually", "0 0 1 1 *"},
        {"@monthly", "0 0 1 * *"},
        {"@weekly", "0 0 * * 0"},
        {"@daily", "0 0 * * *"},
        {"@midnight", "0 0 * * *"},
        {"@hourly", "0 * * * *"},
    }};
    if (w.size() == 1 && w[0].starts_with('@')) {
        const auto* m = std::find_if(kMacros.begin(), kMacros.end(),
                                     [&](const auto& p) { return p.first == w[0]; });
        if (m == kMacros.end())
            fail(fmt::format("unknown macro '{}' (@yearly, @monthly, @weekly, @daily, @hourly)",
                             w[0]));
        w = words(m->second);
    }
    if (w.size() != 5)
        fail(fmt::format("expected 5 fields (minute hour day-of-month month day-of-week), got {}",
                         w.size()));
    try {
        parse_field(w[0], kMinute, c.minutes_);
        parse_field(w[1], kHour, c.hours_);
        parse_field(w[2], kDay, c.days_);
        parse_field(w[3], kMonth, c.months_);
        std::bitset<8> weekdays;  // 0-7, 7 folded onto 0
        parse_field(w[4], kWeekday, weekdays);
        for (std::size_t d = 0; d < 7; ++d) c.weekdays_[d] = weekdays[d] || (d == 0 && weekdays[7]);
    } catch (const std::invalid_argument& e) {
        fail(e.what());
    }
    c.days_restricted_ = !w[2].starts_with('*');
    c.weekdays_restricted_ = !w[4].starts_with('*');
    if (!c.next_after(0)) fail("it never matches");
    return c;
}

std::optional<std::int64_t> CronSchedule::next_after(std::int64_t after_ms) const {
    using namespace std::chrono;
    const sys_seconds after{duration_cast<seconds>(milliseconds(after_ms))};
    auto to_local = [&](sys_seconds t) {
        return zone_ ? zone_->to_local(t) : date::local_seconds{t.time_since_epoch()};
    };
    // The instant of a local time: the first of two; the end of the gap for none.
    auto to_sys = [&](date::local_seconds t) -> sys_seconds {
        if (!zone_) return sys_seconds{t.time_since_epoch()};
        const date::local_info info = zone_->get_info(t);
        if (info.result == date::local_info::nonexistent) return info.second.begin;
        return sys_seconds{t.time_since_epoch()} - info.first.offset;
    };
    // Local times map to instants in order (never backward), so the first matching local
    // time from after's own whose instant is past `after` is the next tick.
    auto t = floor<minutes>(to_local(after));
    const auto limit = t + days(366 * 8 + 2);
    while (t < limit) {
        const auto day = floor<days>(t);
        const date::year_month_day ymd{day};
        const auto month = static_cast<unsigned>(ymd.month());
        if (!months_[month]) {
            const auto first = date::year_month_day{ymd.year() / ymd.month() / 1} + date::months(1);
            t = date::local_days{first};
            continue;
        }
        const bool dom = days_[static_cast<unsigned>(ymd.day())];
        const bool dow = weekdays_[date::weekday{day}.c_encoding()];
        const bool day_ok = days_restricted_ && weekdays_restricted_ ? dom || dow : dom && dow;
        if (!day_ok) {
            t = day + days(1);
            continue;
        }
        const auto hour = duration_cast<hours>(t - day).count();
        if (!hours_[static_cast<std::size_t>(hour)]) {
            t = day + hours(hour + 1);
            continue;
        }
        const auto minute = duration_cast<minutes>(t - day - hours(hour)).count();
        if (minutes_[static_cast<std::size_t>(minute)]) {
            const sys_seconds at = to_sys(t);
            if (at > after) return duration_cast<milliseconds>(at.time_since_epoch()).count();
        }
        t += minutes(1);
    }
    return std::nullopt;
}

}  // namespace cairn::engine
