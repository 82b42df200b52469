// The event-filter expression language: a recursive-descent parser to a small tree, and
// its evaluation over JSON values.

#include "engine/expression.hpp"

#include <fmt/format.h>

#include <cctype>
#include <charconv>
#include <cmath>
#include <vector>

namespace cairn::engine {

namespace {

// Past these, text is refused rather than risk the stack or the time of a caller.
constexpr std::size_t kMaxLength = 4096;
constexpr int kMaxDepth = 48;

enum class Kind { literal, variable, member, index, unary, binary, list, map, has };

}  // namespace

struct Expression::Node {
    Kind kind;
    std::string op;  // unary/binary operator, member name, variable name
    json value;      // literal
    std::vector<std::shared_ptr<const Node>> kids;
};

namespace {

using NodePtr = std::shared_ptr<const Expression::Node>;

NodePtr make(Kind kind, std::string op = {}, std::vector<NodePtr> kids = {}, json value = nullptr) {
    auto n = std::make_shared<Expression::Node>();
    n->kind = kind;
    n->op = std::move(op);
    n->kids = std::move(kids);
    n->value = std::move(value);
    return n;
}

class Parser {
  public:
    explicit Parser(std::string_view text) : s_(text) {}

    NodePtr parse() {
        NodePtr n = disjunction();
        skip_space();
        if (pos_ < s_.size()) fail(fmt::format("unexpected '{}'", s_.substr(pos_, 1)));
        return n;
    }

  private:
    [[noreturn]] void fail(std::string_view what) const {
        throw ExpressionError(fmt::format("{} at position {} of '{}'", what, pos_ + 1, s_));
    }
    void skip_space() {
        while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
    }
    bool eat(std::string_view token) {
        skip_space();
        if (s_.substr(pos_, token.size()) != token) return false;
        // A word operator ("in") must not be the start of a longer identifier.
        if (std::isalpha(static_cast<unsigned char>(token.back())) &&
            pos_ + token.size() < s_.size() && ident_char(s_[pos_ + token.size()]))
            return false;
        pos_ += token.size();
        return true;
    }
    void expect(std::string_view token) {
        if (!eat(token)) fail(fmt::format("expected '{}'", token));
    }
    static bool ident_char(char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
    }
    struct Deeper {
        explicit Deeper(Parser& p) : p_(p) {
            if (++p_.depth_ > kMaxDepth) p_.fail("expression nests too deeply");
        }
        ~Deeper() { --p_.depth_; }
        Parser& p_;
    };

    NodePtr disjunction() {
        Deeper d(*this);
        NodePtr l = conjunction();
        while (eat("||")) l = make(Kind::binary, "||", {l, conjunction()});
        return l;
    }
    NodePtr conjunction() {
        NodePtr l = relation();
        while (eat("&&")) l = make(Kind::binary, "&&", {l, relation()});
        return l;
    }
    NodePtr relation() {
        NodePtr l = additive();
        for (;;) {
            std::string op;
            for (std::string_view o : {"==", "!=", "<=", ">=", "<", ">", "in"}) {
                if (eat(o)) {
                    op = o;
                    break;
                }
            }
            if (op.empty()) return l;
            l = make(Kind::binary, op, {l, additive()});
        }
    }
    NodePtr additive() {
        NodePtr l = unary();
        for (;;) {
            if (eat("+")) {
                l = make(Kind::binary, "+", {l, unary()});
            } else if (eat("-")) {
                l = make(Kind::binary, "-", {l, unary()});
            } else {
                return l;
            }
        }
    }
    NodePtr unary() {
        Deeper d(*this);
        if (eat("!")) return make(Kind::unary, "!", {unary()});
        if (eat("-")) return make(Kind::unary, "-", {unary()});
        return postfix();
    }
    NodePtr postfix() {
        NodePtr n = primary();
        for (;;) {
            if (eat(".")) {
                skip_space();
                n = make(Kind::member, identifier(), {n});
            } else if (eat("[")) {
                NodePtr i = disjunction();
                expect("]");
                n = make(Kind::index, "", {n, i});
            } else {
                return n;
            }
        }
    }
    std::string identifier() {
        skip_space();
        const std::size_t start = pos_;
        if (pos_ < s_.size() &&
            (std::isalpha(static_cast<unsigned char>(s_[pos_])) || s_[pos_] == '_')) {
            while (pos_ < s_.size() && ident_char(s_[pos_])) ++pos_;
        }
        if (pos_ == start) fail("expected a name");
        return std::string(s_.substr(start, pos_ - start));
    }
    NodePtr primary() {
        skip_space();
        if (pos_ >= s_.size()) fail("unexpected end");
        const char c = s_[pos_];
        if (c == '(') {
            ++pos_;
            NodePtr n = disjunction();
            expect(")");
            return n;
        }
        if (c == '"' || c == '\'') return make(Kind::literal, "", {}, string_literal());
        if (std::isdigit(static_cast<unsigned char>(c)) || c == '.') return number();
        if (c == '[') {
            ++pos_;
            std::vector<NodePtr> items;
            if (!eat("]")) {
                do items.push_back(disjunction());
                while (eat(","));
                expect("]");
            }
            return make(Kind::list, "", std::move(items));
        }
        if (c == '{') {
            ++pos_;
            std::vector<NodePtr> kv;
            if (!eat("}")) {
                do {
                    kv.push_back(disjunction());
                    expect(":");
                    kv.push_back(disjunction());
                } while (eat(","));
                expect("}");
            }
            return make(Kind::map, "", std::move(kv));
        }
        const std::size_t at = pos_;
        const std::string name = identifier();
        if (name == "true") return make(Kind::literal, "", {}, true);
        if (name == "false") return make(Kind::literal, "", {}, false);
        if (name == "null") return make(Kind::literal, "", {}, nullptr);
        skip_space();
        if (pos_ < s_.size() && s_[pos_] == '(') {
            if (name != "has") {
                pos_ = at;
                fail(fmt::format("function '{}' is not supported", name));
            }
            ++pos_;
            NodePtr arg = disjunction();
            expect(")");
            if (arg->kind != Kind::member && arg->kind != Kind::index) {
                pos_ = at;
                fail("has() takes a field, as in has(event.data.id)");
            }
            return make(Kind::has, "", {arg});
        }
        if (name != "event" && name != "async") {
            pos_ = at;
            fail(fmt::format("unknown variable '{}' (event and async are known)", name));
        }
        return make(Kind::variable, name);
    }
    json string_literal() {
        const char quote = s_[pos_++];
        std::string out;
        while (pos_ < s_.size() && s_[pos_] != quote) {
            char c = s_[pos_++];
            if (c != '\\') {
                out += c;
                continue;
            }
            if (pos_ >= s_.size()) break;
            c = s_[pos_++];
            switch (c) {
                case 'n':
                    out += '\n';
                    break;
                case 't':
                    out += '\t';
                    break;
                case 'r':
                    out += '\r';
                    break;
                case 'b':
                    out += '\b';
                    break;
                case 'f':
                    out += '\f';
                    break;
                case 'u': {
                    unsigned code = 0;
                    const auto [end, ec] = std::from_chars(
                        s_.data() + pos_, s_.data() + std::min(pos_ + 4, s_.size()), code, 16);
                    if (ec != std::errc{} || end != s_.data() + pos_ + 4) fail("bad \\u escape");
                    pos_ += 4;
                    if (code >= 0xD800 && code <= 0xDFFF)
                        fail("surrogates are not supported in \\u escapes");
                    // UTF-8 of the code point.
                    if (code < 0x80) {
                        out += static_cast<char>(code);
                    } else if (code < 0x800) {
                        out += static_cast<char>(0xC0 | (code >> 6));
                        out += static_cast<char>(0x80 | (code & 0x3F));
                    } else {
                        out += static_cast<char>(0xE0 | (code >> 12));
                        out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
                        out += static_cast<char>(0x80 | (code & 0x3F));
                    }
                    break;
                }
                default:
                    out += c;  // \" \' \\ and the like
            }
        }
        if (pos_ >= s_.size()) fail("unterminated string");
        ++pos_;
        return out;
    }
    NodePtr number() {
        const std::size_t start = pos_;
        bool real = false;
        while (pos_ < s_.size()) {
            const char c = s_[pos_];
            if (std::isdigit(static_cast<unsigned char>(c))) {
                ++pos_;
            } else if (c == '.' || c == 'e' || c == 'E') {
                real = true;
                ++pos_;
                if ((c == 'e' || c == 'E') && pos_ < s_.size() &&
                    (s_[pos_] == '+' || s_[pos_] == '-'))
                    ++pos_;
            } else {
                break;
            }
        }
        const std::string_view text = s_.substr(start, pos_ - start);
        if (!real) {
            std::int64_t v = 0;
            const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
            if (ec == std::errc{} && end == text.data() + text.size())
                return make(Kind::literal, "", {}, v);
        }
        double d = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), d);
        if (ec != std::errc{} || end != text.data() + text.size()) {
            pos_ = start;
            fail(fmt::format("bad number '{}'", text));
        }
        return make(Kind::literal, "", {}, d);
    }

    std::string_view s_;
    std::size_t pos_ = 0;
    int depth_ = 0;
};

// ---- evaluation ----------------------------------------------------------------------------

struct Env {
    const json& event;
    const json& async;
};

json eval(const Expression::Node& n, const Env& env);

bool truthy(const json& v) {
    return v.is_boolean() && v.get<bool>();
}

json member_of(const json& obj, const json& key) {
    if (obj.is_object() && key.is_string()) {
        const auto it = obj.find(key.get<std::string>());
        return it == obj.end() ? json(nullptr) : *it;
    }
    if (obj.is_array() && key.is_number_integer()) {
        const auto i = key.get<std::int64_t>();
        if (i >= 0 && static_cast<std::size_t>(i) < obj.size())
            return obj[static_cast<std::size_t>(i)];
    }
    return nullptr;
}

// Whether the field exists (has()): its container holds the key.
bool present(const Expression::Node& n, const Env& env) {
    const json container = eval(*n.kids[0], env);
    if (n.kind == Kind::member) return container.is_object() && container.contains(n.op);
    const json key = eval(*n.kids[1], env);
    if (container.is_object() && key.is_string()) return container.contains(key.get<std::string>());
    if (container.is_array() && key.is_number_integer()) {
        const auto i = key.get<std::int64_t>();
        return i >= 0 && static_cast<std::size_t>(i) < container.size();
    }
    return false;
}

json compare(const std::string& op, const json& l, const json& r) {
    if (op == "==") return l == r;
    if (op == "!=") return l != r;
    const bool numbers = l.is_number() && r.is_number();
    if (!numbers && !(l.is_string() && r.is_string())) return nullptr;
    if (op == "<") return l < r;
    if (op == "<=") return l <= r;
    if (op == ">") return l > r;
    return l >= r;  // ">="
}

json arithmetic(const std::string& op, const json& l, const json& r) {
    if (op == "+" && l.is_string() && r.is_string())
        return l.get<std::string>() + r.get<std::string>();
    if (op == "+" && l.is_array() && r.is_array()) {
        json out = l;
        out.insert(out.end(), r.begin(), r.end());
        return out;
    }
    if (l.is_number_integer() && r.is_number_integer()) {
        const auto a = l.get<std::int64_t>();
        const auto b = r.get<std::int64_t>();
        std::int64_t out = 0;
        const bool overflow =
            op == "+" ? __builtin_add_overflow(a, b, &out) : __builtin_sub_overflow(a, b, &out);
        if (!overflow) return out;
        return nullptr;
    }
    if (l.is_number() && r.is_number()) {
        const double out =
            op == "+" ? l.get<double>() + r.get<double>() : l.get<double>() - r.get<double>();
        if (std::isfinite(out)) return out;  // JSON has no infinity
    }
    return nullptr;
}

json eval(const Expression::Node& n, const Env& env) {
    switch (n.kind) {
        case Kind::literal:
            return n.value;
        case Kind::variable:
            return n.op == "event" ? env.event : env.async;
        case Kind::member:
            return member_of(eval(*n.kids[0], env), json(n.op));
        case Kind::index:
            return member_of(eval(*n.kids[0], env), eval(*n.kids[1], env));
        case Kind::has:
            return present(*n.kids[0], env);
        case Kind::list: {
            json out = json::array();
            for (const auto& k : n.kids) out.push_back(eval(*k, env));
            return out;
        }
        case Kind::map: {
            json out = json::object();
            for (std::size_t i = 0; i + 1 < n.kids.size(); i += 2) {
                const json key = eval(*n.kids[i], env);
                if (!key.is_string()) return nullptr;
                out[key.get<std::string>()] = eval(*n.kids[i + 1], env);
            }
            return out;
        }
        case Kind::unary: {
            const json v = eval(*n.kids[0], env);
            if (n.op == "!") return v.is_boolean() ? json(!v.get<bool>()) : json(nullptr);
            if (v.is_number_integer() && v.get<std::int64_t>() != INT64_MIN)
                return -v.get<std::int64_t>();
            if (v.is_number()) return -v.get<double>();
            return nullptr;
        }
        case Kind::binary: {
            if (n.op == "&&") return truthy(eval(*n.kids[0], env)) && truthy(eval(*n.kids[1], env));
            if (n.op == "||") return truthy(eval(*n.kids[0], env)) || truthy(eval(*n.kids[1], env));
            const json l = eval(*n.kids[0], env);
            const json r = eval(*n.kids[1], env);
            if (n.op == "+" || n.op == "-") return arithmetic(n.op, l, r);
            if (n.op == "in") {
                if (r.is_array()) return std::find(r.begin(), r.end(), l) != r.end();
                if (r.is_object() && l.is_string()) return r.contains(l.get<std::string>());
                return false;
            }
            return compare(n.op, l, r);
        }
    }
    return nullptr;
}

bool refers_to(const Expression::Node& n, std::string_view var) {
    if (n.kind == Kind::variable) return n.op == var;
    for (const auto& k : n.kids) {
        if (refers_to(*k, var)) return true;
    }
    return false;
}

std::string render(const Expression::Node& n, const json& event);

// The object of a member access or index: parenthesized unless it is a name or another
// access (a literal number before "." would read as a fraction).
std::string operand(const Expression::Node& n, const json& event) {
    const std::string text = render(n, event);
    const bool plain = n.kind == Kind::variable || n.kind == Kind::member || n.kind == Kind::index;
    return plain && text.front() != '{' && text.front() != '[' && text.front() != '"'
               ? text
               : "(" + text + ")";
}

// The tree as text, each subtree that refers to `event` and not `async` written as its
// value (a JSON text is a CEL literal: strings, numbers, bools, null, lists and maps).
std::string render(const Expression::Node& n, const json& event) {
    if (n.kind != Kind::literal && refers_to(n, "event") && !refers_to(n, "async"))
        return eval(n, Env{event, nullptr}).dump();
    switch (n.kind) {
        case Kind::literal:
            return n.value.dump();
        case Kind::variable:
            return n.op;
        case Kind::member:
            return fmt::format("{}.{}", operand(*n.kids[0], event), n.op);
        case Kind::index:
            return fmt::format("{}[{}]", operand(*n.kids[0], event), render(*n.kids[1], event));
        case Kind::has:
            return fmt::format("has({})", render(*n.kids[0], event));
        case Kind::unary:
            return fmt::format("{}({})", n.op, render(*n.kids[0], event));
        case Kind::binary:
            return fmt::format("({}) {} ({})", render(*n.kids[0], event), n.op,
                               render(*n.kids[1], event));
        case Kind::list:
        case Kind::map: {
            std::string out = n.kind == Kind::list ? "[" : "{";
            for (std::size_t i = 0; i < n.kids.size(); ++i) {
                if (i > 0) out += n.kind == Kind::map && i % 2 == 1 ? ": " : ", ";
                out += render(*n.kids[i], event);
            }
            return out + (n.kind == Kind::list ? "]" : "}");
        }
    }
    return "null";
}

bool valid_utf8(std::string_view s) {
    for (std::size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        std::size_t n = 0;
        char32_t cp = 0;
        if (c < 0x80) {
            ++i;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 1;
            cp = c & 0x1FU;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2;
            cp = c & 0x0FU;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3;
            cp = c & 0x07U;
        } else {
            return false;
        }
        if (i + n >= s.size()) return false;
        for (std::size_t k = 1; k <= n; ++k) {
            const auto cc = static_cast<unsigned char>(s[i + k]);
            if ((cc & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (cc & 0x3FU);
        }
        // Overlong forms, surrogates and values past U+10FFFF.
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
            return false;
        i += n + 1;
    }
    return true;
}

int depth(const Expression::Node& n) {
    int deepest = 0;
    for (const auto& k : n.kids) deepest = std::max(deepest, depth(*k));
    return deepest + 1;
}

}  // namespace

Expression Expression::parse(std::string_view text) {
    if (text.size() > kMaxLength)
        throw ExpressionError(fmt::format("expression is longer than {} characters", kMaxLength));
    if (!valid_utf8(text)) throw ExpressionError("expression is not valid UTF-8");
    Expression e;
    e.text_ = std::string(text);
    e.root_ = Parser(e.text_).parse();
    // Chains (a.b.c..., a + b + c ...) are parsed in loops: bound the tree's depth too,
    // as evaluation recurses along it.
    if (depth(*e.root_) > 2 * kMaxDepth)
        throw ExpressionError(fmt::format("expression nests too deeply: '{}'", e.text_));
    return e;
}

Expression::~Expression() = default;
Expression::Expression(Expression&&) noexcept = default;
Expression& Expression::operator=(Expression&&) noexcept = default;
Expression::Expression(const Expression&) = default;
Expression& Expression::operator=(const Expression&) = default;

json Expression::evaluate(const json& event, const json& async) const {
    return eval(*root_, Env{event, async});
}

bool Expression::matches(const json& event, const json& async) const {
    return truthy(evaluate(event, async));
}

std::string Expression::bind_event(const json& event) const {
    return render(*root_, event);
}

bool Expression::uses_async() const {
    return refers_to(*root_, "async");
}

}  // namespace cairn::engine
