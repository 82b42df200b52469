#pragma once

#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

#include "cairn/workflow.hpp"

namespace cairn::engine {

// An expression is malformed or outside the supported subset; the message names the
// problem and its position.
class ExpressionError : public std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

// The subset of CEL that event filters use (docs/sdk.md): member access (`a.b`, `a["b"]`,
// `a[0]`), string, number, bool and null literals, list literals, `==` `!=` `<` `<=` `>`
// `>=`, `&&` `||` `!`, `in`, `has(a.b)`, `+` on strings, numbers and lists, unary `-`, and
// parentheses, over the variables `event` and `async`. Parsed once; evaluation is
// thread-safe. A missing attribute reads as null, so `async.data.x == "y"` is false, not
// an error, when the event lacks the field.
class Expression {
  public:
    // Throws ExpressionError.
    static Expression parse(std::string_view text);
    ~Expression();
    Expression(Expression&&) noexcept;
    Expression& operator=(Expression&&) noexcept;
    Expression(const Expression& other);
    Expression& operator=(const Expression& other);

    // The value for these variables (null for one not given).
    json evaluate(const json& event, const json& async = nullptr) const;
    // Whether it evaluates to true (anything else, including a type mismatch, is false).
    bool matches(const json& event, const json& async = nullptr) const;
    // The expression with every `event` reference replaced by its value in `event`, as
    // text: what a wait keeps, to be matched later against `async` alone.
    std::string bind_event(const json& event) const;
    // Whether it refers to the variable `async`.
    bool uses_async() const;
    const std::string& text() const { return text_; }

    struct Node;

  private:
    Expression() = default;
    std::string text_;
    std::shared_ptr<const Node> root_;
};

}  // namespace cairn::engine
