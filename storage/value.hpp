#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

namespace cairn::storage {

// One SQL value, as a statement parameter or a result cell. Booleans are a parameter type
// only: SQLite stores them as integers 0/1 and Postgres returns them as text; Row::get<bool>
// reads either.
using Value = std::variant<std::monostate, std::int64_t, double, std::string, bool>;

// Converts a C++ argument to a Value: integers (not bool) widen to int64, floating point to
// double, string-like to text, std::optional/nullptr/std::nullopt to NULL.
template <class T>
Value to_value(T&& v) {
    using U = std::remove_cvref_t<T>;
    if constexpr (std::is_same_v<U, Value> || std::is_same_v<U, bool>) {
        return v;
    } else if constexpr (std::is_same_v<U, std::nullptr_t> || std::is_same_v<U, std::nullopt_t> ||
                         std::is_same_v<U, std::monostate>) {
        return std::monostate{};
    } else if constexpr (std::is_integral_v<U>) {
        return static_cast<std::int64_t>(v);
    } else if constexpr (std::is_floating_point_v<U>) {
        return static_cast<double>(v);
    } else if constexpr (std::is_convertible_v<T, std::string_view>) {
        return std::string(std::string_view(v));
    } else {
        // std::optional<X>
        if (!v) return std::monostate{};
        return to_value(*std::forward<T>(v));
    }
}

// The parameters of a statement written piece by piece: `param(v)` appends v and returns
// its placeholder ("$3"). With `columns` set it returns a column's name instead, that
// name followed by v's index ("c.a0"): the text is then one row's of many, its values read
// from arrays (RunStore::insert_events_alone).
struct Params {
    std::vector<Value> values;
    std::string columns;
    template <class T>
    std::string operator()(T&& v) {
        values.push_back(to_value(std::forward<T>(v)));
        if (!columns.empty()) return columns + std::to_string(values.size() - 1);
        std::string placeholder(1, '$');  // appended, not `"$" + ...`: GCC 12 -O3 -Wrestrict
        placeholder += std::to_string(values.size());
        return placeholder;
    }
};

// A condition a write is made on, checked in the write's own transaction (on Postgres
// inside its one statement), so nothing that commits before the write can come between
// the check and it: such as "the session of the request that writes is still live". It
// returns the text of a query, its parameters appended through `param`, that yields a row
// exactly when the write may go ahead. The text is the caller's constant; input goes in
// the parameters only.
using OnlyIf = std::function<std::string(Params& param)>;

}  // namespace cairn::storage
