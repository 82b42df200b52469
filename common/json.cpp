#include "common/json.hpp"

#include <fmt/format.h>

namespace cairn {

int json_depth(std::string_view text, int limit) {
    int depth = 0, deepest = 0;
    bool in_string = false;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (in_string) {
            if (c == '\\') {
                ++i;  // the escaped character, whatever it is
            } else if (c == '"') {
                in_string = false;
            }
            continue;
        }
        if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > deepest) deepest = depth;
            if (deepest > limit) return deepest;
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;
        }
    }
    return deepest;
}

nlohmann::json parse_untrusted_json(std::string_view text, std::string& error, int max_depth) {
    error.clear();
    if (json_depth(text, max_depth) > max_depth) {
        error = fmt::format("the JSON nests deeper than {} levels", max_depth);
        return nlohmann::json::value_t::discarded;
    }
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded()) error = "the text is not JSON";
    return j;
}

}  // namespace cairn
