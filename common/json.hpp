#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace cairn {

// The deepest nesting of arrays and objects accepted in JSON from outside the process.
// nlohmann's copy and serialisation recurse once per level, so a body nested a few hundred
// thousand levels deep would overflow a thread's stack; no request needs more than a few.
inline constexpr int kMaxJsonDepth = 64;

// How deep `text` nests arrays and objects (strings and their escapes skipped), stopping
// early once past `limit`; reads the text once, allocates nothing.
int json_depth(std::string_view text, int limit);

// Parses JSON that came from outside (a request body, a WebSocket message, a reply from a
// remote service). On malformed text, nesting deeper than `max_depth`, or a string holding
// \u0000, returns a discarded value (is_discarded()) and says why in `error`.
nlohmann::json parse_untrusted_json(std::string_view text, std::string& error,
                                    int max_depth = kMaxJsonDepth);

}  // namespace cairn
