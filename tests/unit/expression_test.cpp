#include "engine/expression.hpp"

#include <doctest/doctest.h>

using cairn::json;
using cairn::engine::Expression;
using cairn::engine::ExpressionError;

namespace {

const json kEvent = {{"name", "user/signup"},
                     {"data",
                      {{"user_id", "u_1"},
                       {"plan", "pro"},
                       {"seats", 3},
                       {"ratio", 0.5},
                       {"tags", {"a", "b"}},
                       {"nested", {{"ok", true}}}}}};

bool holds(const char* text, const json& async = nullptr) {
    return Expression::parse(text).matches(kEvent, async);
}

}  // namespace

TEST_CASE("expressions: comparisons, logic, membership and has()") {
    CHECK(holds("event.data.plan == 'pro'"));
    CHECK(holds("event.data.plan == \"pro\" && event.data.seats > 2"));
    CHECK_FALSE(holds("event.data.plan != 'pro'"));
    CHECK(holds("event.data.seats >= 3 && event.data.seats <= 3 && event.data.seats < 4"));
    CHECK(holds("event.data.ratio < 1 && event.data.seats == 3.0"));
    CHECK(holds("!(event.data.seats > 10) || false"));
    CHECK(holds("'a' in event.data.tags && !('c' in event.data.tags)"));
    CHECK(holds("'plan' in event.data"));
    CHECK(holds("has(event.data.nested.ok) && !has(event.data.missing)"));
    CHECK(holds("event.data.nested.ok == true"));
    CHECK(holds("event.data['user_id'] + '-x' == 'u_1-x'"));
    CHECK(
        holds("event.data.tags[1] == 'b' && event.data.seats + 1 == 4 && -event.data.seats == -3"));
    CHECK(holds("event.data.plan in ['free', 'pro']"));
    CHECK(holds("event.name == 'user/signup'"));
}

TEST_CASE("expressions: a missing field is null, and a type mismatch is false, not an error") {
    CHECK(holds("event.data.nothing == null"));
    CHECK_FALSE(holds("event.data.nothing.deeper == 'x'"));
    CHECK_FALSE(holds("event.data.plan > 3"));
    CHECK_FALSE(holds("event.data.plan"));              // not a bool
    CHECK_FALSE(holds("async.data.user_id == 'u_1'"));  // no async given
}

TEST_CASE("expressions: async is the candidate event; bind_event fixes the run's own") {
    const Expression e = Expression::parse("event.data.user_id == async.data.user_id");
    CHECK(e.uses_async());
    const json same = {{"data", {{"user_id", "u_1"}}}};
    const json other = {{"data", {{"user_id", "u_2"}}}};
    CHECK(e.matches(kEvent, same));
    CHECK_FALSE(e.matches(kEvent, other));
    // Bound: the run's event is gone from the text, the candidate still matched.
    const Expression bound = Expression::parse(e.bind_event(kEvent));
    CHECK(bound.text().find("event.") == std::string::npos);
    CHECK(bound.matches(nullptr, same));
    CHECK_FALSE(bound.matches(nullptr, other));
    // Values of any type survive binding as literals.
    const Expression all = Expression::parse(
        "async.data.tags == event.data.tags && async.data.n == event.data.nested && "
        "async.data.r == event.data.ratio");
    const Expression b2 = Expression::parse(all.bind_event(kEvent));
    CHECK(b2.matches(nullptr,
                     json{{"data", {{"tags", {"a", "b"}}, {"n", {{"ok", true}}}, {"r", 0.5}}}}));
    CHECK_FALSE(Expression::parse("event.data.plan == 'pro'").uses_async());
    // Found by the fuzzer: a number before a member access binds as (1).x, not "1.x".
    const Expression member_of_number = Expression::parse("async.data.x == 1 ._a");
    CHECK_NOTHROW(Expression::parse(member_of_number.bind_event(kEvent)));
}

TEST_CASE("expressions: outside the subset or malformed, refused with the reason") {
    auto refused = [](const char* text, const char* why) {
        CAPTURE(text);
        try {
            Expression::parse(text);
            FAIL("parsed");
        } catch (const ExpressionError& e) {
            CHECK(std::string(e.what()).find(why) != std::string::npos);
        }
    };
    refused("lowercase(event.name) == 'x'", "function 'lowercase' is not supported");
    refused("vars.x == 1", "unknown variable 'vars'");
    refused("event.data.x ==", "unexpected end");
    refused("event.data.x == 'open", "unterminated string");
    refused("(event.data.x == 1", "expected ')'");
    refused("event.data.x == 1 1", "unexpected '1'");
    refused("has(1)", "has() takes a field");
    refused("1.2.3 == 1", "bad number");
    refused(std::string(5000, 'a').c_str(), "longer than");
    refused("event.data.x == '\xff'", "not valid UTF-8");
    refused((std::string(200, '(') + "1" + std::string(200, ')')).c_str(), "nests too deeply");
    std::string chain = "event";
    for (int i = 0; i < 300; ++i) chain += ".a";
    refused(chain.c_str(), "nests too deeply");
}
