// Reading cells of a Result (Row::get) whatever type the backend returned them as.

#include "storage/result.hpp"

#include <fmt/format.h>

#include <charconv>
#include <climits>
#include <cmath>

#include "storage/errors.hpp"

namespace cairn::storage {

std::size_t Row::index_of(std::string_view column) const {
    const auto& cols = data_->columns;
    for (std::size_t i = 0; i < cols.size(); ++i) {
        if (cols[i] == column) return i;
    }
    throw StorageError(data_->backend, fmt::format("result has no column '{}'", column));
}

const Value& Row::raw(std::size_t column) const {
    const auto n = data_->columns.size();
    if (column >= n || row_ >= data_->rows()) {
        throw StorageError(data_->backend,
                           fmt::format("cell ({}, {}) is out of range", row_, column));
    }
    return data_->cells[row_ * n + column];
}

bool Row::is_null(std::size_t column) const {
    return std::holds_alternative<std::monostate>(raw(column));
}

namespace {

[[noreturn]] void bad_cell(const std::string& backend, const std::string& column,
                           std::string_view want, std::string_view got) {
    throw StorageError(backend,
                       fmt::format("column '{}': cannot read {} as {}", column, got, want));
}

template <class Int>
Int parse_int(std::string_view text, bool& ok) {
    Int v{};
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    ok = ec == std::errc{} && end == text.data() + text.size();
    return v;
}

}  // namespace

template <>
std::int64_t Row::get<std::int64_t>(std::size_t column) const {
    const Value& v = raw(column);
    const std::string& name = data_->columns[column];
    if (auto* i = std::get_if<std::int64_t>(&v)) return *i;
    if (auto* s = std::get_if<std::string>(&v)) {
        bool ok = false;
        auto out = parse_int<std::int64_t>(*s, ok);
        if (ok) return out;
        bad_cell(data_->backend, name, "an integer", fmt::format("text '{}'", s->substr(0, 40)));
    }
    if (auto* d = std::get_if<double>(&v); d && std::trunc(*d) == *d && std::abs(*d) < 9.0e15) {
        return static_cast<std::int64_t>(*d);
    }
    bad_cell(data_->backend, name, "an integer", is_null(column) ? "NULL" : "a non-integer");
}

template <>
int Row::get<int>(std::size_t column) const {
    auto v = get<std::int64_t>(column);
    if (v < INT32_MIN || v > INT32_MAX) {
        bad_cell(data_->backend, data_->columns[column], "a 32-bit integer", std::to_string(v));
    }
    return static_cast<int>(v);
}

template <>
double Row::get<double>(std::size_t column) const {
    const Value& v = raw(column);
    if (auto* d = std::get_if<double>(&v)) return *d;
    if (auto* i = std::get_if<std::int64_t>(&v)) return static_cast<double>(*i);
    if (auto* s = std::get_if<std::string>(&v)) {
        // Postgres spells the special values out.
        if (*s == "NaN") return std::nan("");
        if (*s == "Infinity") return HUGE_VAL;
        if (*s == "-Infinity") return -HUGE_VAL;
        double out = 0;
        auto [end, ec] = std::from_chars(s->data(), s->data() + s->size(), out);
        if (ec == std::errc{} && end == s->data() + s->size()) return out;
        bad_cell(data_->backend, data_->columns[column], "a number",
                 fmt::format("text '{}'", s->substr(0, 40)));
    }
    bad_cell(data_->backend, data_->columns[column], "a number", "NULL");
}

template <>
bool Row::get<bool>(std::size_t column) const {
    const Value& v = raw(column);
    if (auto* b = std::get_if<bool>(&v)) return *b;
    if (auto* i = std::get_if<std::int64_t>(&v)) return *i != 0;
    if (auto* s = std::get_if<std::string>(&v)) {
        if (*s == "t" || *s == "true" || *s == "1") return true;
        if (*s == "f" || *s == "false" || *s == "0") return false;
        bad_cell(data_->backend, data_->columns[column], "a boolean",
                 fmt::format("text '{}'", s->substr(0, 40)));
    }
    bad_cell(data_->backend, data_->columns[column], "a boolean",
             is_null(column) ? "NULL" : "a number");
}

template <>
std::string Row::get<std::string>(std::size_t column) const {
    const Value& v = raw(column);
    if (auto* s = std::get_if<std::string>(&v)) return *s;
    if (auto* i = std::get_if<std::int64_t>(&v)) return std::to_string(*i);
    if (auto* d = std::get_if<double>(&v)) return fmt::format("{}", *d);
    if (auto* b = std::get_if<bool>(&v)) return *b ? "true" : "false";
    bad_cell(data_->backend, data_->columns[column], "text", "NULL");
}

}  // namespace cairn::storage
