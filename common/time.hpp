#pragma once

#include <cstdint>
#include <string>

namespace cairn {

// Milliseconds since the Unix epoch from the system clock. Stored times are always
// epoch milliseconds (DESIGN.md §2); code that must be testable takes `now` as a
// parameter or reads an injectable clock (engine/clock.hpp) instead of calling this.
std::int64_t now_ms();

// RFC 3339 UTC text with millisecond precision, e.g. "2026-11-22T10:15:30.123Z".
std::string format_rfc3339(std::int64_t unix_ms);

}  // namespace cairn
