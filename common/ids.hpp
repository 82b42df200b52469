#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace cairn {

// Returns a new UUIDv7 (RFC 9562) in canonical lower-case text form.
//
// Ids are time-ordered: within one process every id compares greater (as a string) than
// every id returned before it, also within the same millisecond (a 12-bit counter in
// rand_a, seeded at random each millisecond). Across processes order follows the clock.
// The random bits come from the kernel's CSPRNG, so an id cannot be guessed from others.
// Thread-safe.
std::string new_id();

// Same, with the timestamp taken from `unix_ms` rather than the system clock. Ids never go
// backwards: a `unix_ms` earlier than one already used (a clock stepped back, a test's
// fixed time) is raised to it.
std::string new_id_at(std::int64_t unix_ms);

// A text that every id made before `unix_ms` compares less than, and every id made at or
// after it greater than: the timestamp's part of the id ("0190a1b2-c3d4-").
std::string id_floor(std::int64_t unix_ms);

// True when `text` is a canonical UUID (any version): 36 characters, hex and dashes.
bool is_uuid(std::string_view text);

}  // namespace cairn
