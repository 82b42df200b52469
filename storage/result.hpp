#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "storage/value.hpp"

namespace cairn::storage {

class Result;

// A view of one row of a Result; valid while the Result lives.
//
// get<T>(column) reads a cell as T, where T is std::int64_t, int, double, bool or
// std::string; it throws StorageError when the cell is NULL or cannot be read as T
// (text "abc" as an integer). get_opt<T> returns std::nullopt for NULL instead.
class Row {
  public:
    template <class T>
    T get(std::size_t column) const;
    template <class T>
    T get(std::string_view column) const {
        return get<T>(index_of(column));
    }
    template <class T>
    std::optional<T> get_opt(std::size_t column) const {
        if (is_null(column)) return std::nullopt;
        return get<T>(column);
    }
    template <class T>
    std::optional<T> get_opt(std::string_view column) const {
        return get_opt<T>(index_of(column));
    }

    bool is_null(std::size_t column) const;
    bool is_null(std::string_view column) const { return is_null(index_of(column)); }
    const Value& raw(std::size_t column) const;

  private:
    friend class Result;
    Row(const Result* result, std::size_t row) : result_(result), row_(row) {}
    std::size_t index_of(std::string_view column) const;

    const Result* result_;
    std::size_t row_;
};

// The rows a statement returned plus the number of rows it changed. Backends fill it;
// users only read it.
class Result {
  public:
    class Iterator {
      public:
        Iterator(const Result* r, std::size_t i) : r_(r), i_(i) {}
        Row operator*() const { return (*r_)[i_]; }
        Iterator& operator++() {
            ++i_;
            return *this;
        }
        bool operator==(const Iterator& o) const { return i_ == o.i_; }

      private:
        const Result* r_;
        std::size_t i_;
    };

    Result() = default;
    Result(std::string backend, std::vector<std::string> columns)
        : backend_(std::move(backend)), columns_(std::move(columns)) {}

    std::size_t size() const { return columns_.empty() ? 0 : cells_.size() / columns_.size(); }
    bool empty() const { return size() == 0; }
    Row operator[](std::size_t row) const { return Row(this, row); }
    Row front() const { return (*this)[0]; }
    Iterator begin() const { return {this, 0}; }
    Iterator end() const { return {this, size()}; }

    const std::vector<std::string>& columns() const { return columns_; }
    // Rows inserted, updated or deleted by the statement (0 for a plain SELECT).
    std::int64_t affected() const { return affected_; }

    // For backends.
    template <class T>
    void push(T&& v) {
        cells_.emplace_back(std::in_place_type<std::remove_cvref_t<T>>, std::forward<T>(v));
    }
    void set_affected(std::int64_t n) { affected_ = n; }
    const std::string& backend() const { return backend_; }

  private:
    friend class Row;
    std::string backend_;
    std::vector<std::string> columns_;
    std::vector<Value> cells_;  // row-major
    std::int64_t affected_ = 0;
};

}  // namespace cairn::storage
