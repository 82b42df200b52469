// libFuzzer target: the event-filter expression parser and evaluator. Any exception but
// ExpressionError, a crash or a sanitizer report is a finding; so is an expression whose
// text with the run's event bound in (what a wait keeps) does not parse again or matches
// differently from the original. Seeds in tests/fuzz/expression/.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "engine/expression.hpp"

namespace {

const cairn::json kEvent = {{"name", "ticket/created"},
                            {"id", "e1"},
                            {"ts", 1796661186117},
                            {"data",
                             {{"id", 42},
                              {"user", "u_1"},
                              {"tags", {"a", "b"}},
                              {"ok", true},
                              {"r", 0.25},
                              {"nested", {{"x", nullptr}, {"s", "é\"\\\n"}}}}}};
const cairn::json kAsync = {
    {"name", "ticket/closed"},
    {"data", {{"id", 42}, {"user", "u_2"}, {"tags", {"b"}}, {"ok", false}}}};

bool limit_reached(const cairn::engine::ExpressionError& e) {
    const std::string_view what = e.what();
    return what.find("longer than") != std::string_view::npos ||
           what.find("nests too deeply") != std::string_view::npos;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using cairn::engine::Expression;
    using cairn::engine::ExpressionError;
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    std::optional<Expression> e;
    try {
        e = Expression::parse(text);
    } catch (const ExpressionError&) {
        return 0;
    }
    const cairn::json direct = e->evaluate(kEvent, kAsync);
    (void)e->matches(kEvent, nullptr);
    std::string bound_text;
    try {
        bound_text = e->bind_event(kEvent);
        const Expression bound = Expression::parse(bound_text);
        if (bound.evaluate(nullptr, kAsync) != direct) std::abort();
    } catch (const ExpressionError& err) {
        if (!limit_reached(err)) std::abort();  // a bound text must parse
    }
    return 0;
}
