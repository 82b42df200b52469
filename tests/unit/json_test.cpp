#include "common/json.hpp"

#include <doctest/doctest.h>

#include <string>

using cairn::json_depth;
using cairn::parse_untrusted_json;

namespace {
std::string nested(int depth) {
    return std::string(depth, '[') + std::string(depth, ']');
}
}  // namespace

TEST_CASE("json_depth counts arrays and objects, not brackets inside strings") {
    CHECK(json_depth("1", 64) == 0);
    CHECK(json_depth(R"({"a":[1,{"b":2}]})", 64) == 3);
    CHECK(json_depth(R"({"a":"[[[[{{{{"})", 64) == 1);
    CHECK(json_depth(R"(["\"[[[", ["x"]])", 64) == 2);
    CHECK(json_depth(nested(1000), 64) == 65);  // stops once past the limit
}

TEST_CASE("parse_untrusted_json takes nesting up to the limit and refuses deeper") {
    std::string error;
    CHECK_FALSE(parse_untrusted_json(nested(64), error).is_discarded());
    CHECK(error.empty());
    CHECK(parse_untrusted_json(nested(65), error).is_discarded());
    CHECK(error == "the JSON nests deeper than 64 levels");
    // A body deep enough to overflow the stack when copied is refused before it is built.
    CHECK(parse_untrusted_json(nested(400000), error).is_discarded());
    CHECK(parse_untrusted_json("{\"a\":", error).is_discarded());
    CHECK(error == "the text is not JSON");
    CHECK(parse_untrusted_json(R"({"a":[1,2]})", error)["a"][1] == 2);
}

TEST_CASE("parse_untrusted_json refuses strings holding NUL, but not an escaped backslash") {
    std::string error;
    CHECK(parse_untrusted_json(R"({"title":"a\u0000b"})", error).is_discarded());
    CHECK(error == "the JSON holds a NUL character (\\u0000), which no text field can store");
    CHECK(parse_untrusted_json(R"({"a\u0000":1})", error).is_discarded());
    const auto ok = parse_untrusted_json(R"({"path":"C:\\u0000"})", error);
    REQUIRE_FALSE(ok.is_discarded());
    CHECK(ok["path"] == "C:\\u0000");
}
