#pragma once

#include <cstdint>
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

}  // namespace cairn::storage
