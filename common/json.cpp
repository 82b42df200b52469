#include "common/json.hpp"

#include <fmt/format.h>

namespace cairn {
namespace {

struct Scan {
    int deepest = 0;
    bool nul = false;  // a string holds \u0000
};

Scan scan(std::string_view text, int limit) {
    Scan out;
    int depth = 0;
    int& deepest = out.deepest;
    bool in_string = false;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (in_string) {
            if (c == '\\') {
                if (text.substr(i + 1, 5) == "u0000") out.nul = true;
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
            if (deepest > limit) return out;
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;
        }
    }
    return out;
}

}  // namespace

int json_depth(std::string_view text, int limit) {
    return scan(text, limit).deepest;
}

nlohmann::json parse_untrusted_json(std::string_view text, std::string& error, int max_depth) {
    error.clear();
    const Scan s = scan(text, max_depth);
    if (s.deepest > max_depth) {
        error = fmt::format("the JSON nests deeper than {} levels", max_depth);
        return nlohmann::json::value_t::discarded;
    }
    if (s.nul) {
        // Neither database can store it: Postgres refuses it in text and jsonb.
        error = "the JSON holds a NUL character (\\u0000), which no text field can store";
        return nlohmann::json::value_t::discarded;
    }
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded()) error = "the text is not JSON";
    return j;
}

}  // namespace cairn
