#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cairn {

// Milliseconds since the Unix epoch from the system clock. Stored times are always
// epoch milliseconds; code that must be testable takes `now` as a
// parameter or reads an injectable clock (engine/clock.hpp) instead of calling this.
std::int64_t now_ms();

// RFC 3339 UTC text with millisecond precision, e.g. "2026-11-22T10:15:30.123Z".
std::string format_rfc3339(std::int64_t unix_ms);

// Parses RFC 3339 date-time text to epoch milliseconds: "2026-11-22T10:15:30Z", with
// optional fractional seconds (milliseconds kept) and a "Z" or "+hh:mm"/"-hh:mm" offset.
// Returns nullopt for anything else, including impossible dates ("2026-02-30").
std::optional<std::int64_t> parse_rfc3339(std::string_view text);

}  // namespace cairn
