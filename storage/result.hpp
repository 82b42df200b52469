#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "storage/value.hpp"

namespace cairn::storage {

class Result;

namespace detail {
// The cells of a Result, shared with its Rows so a Row stays valid on its own.
struct ResultData {
    std::string backend;
    std::vector<std::string> columns;
    std::vector<Value> cells;  // row-major
    std::size_t rows() const { return columns.empty() ? 0 : cells.size() / columns.size(); }
};
}  // namespace detail

// One row of a Result. It shares the Result's data, so it may outlive the Result
// (`auto row = db.read(...).front();` is fine).
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
    Row(std::shared_ptr<const detail::ResultData> data, std::size_t row)
        : data_(std::move(data)), row_(row) {}
    std::size_t index_of(std::string_view column) const;

    std::shared_ptr<const detail::ResultData> data_;
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

    Result() : data_(std::make_shared<detail::ResultData>()) {}
    Result(std::string backend, std::vector<std::string> columns)
        : data_(std::make_shared<detail::ResultData>(
              detail::ResultData{std::move(backend), std::move(columns), {}})) {}

    std::size_t size() const { return data_->rows(); }
    bool empty() const { return size() == 0; }
    Row operator[](std::size_t row) const { return Row(data_, row); }
    Row front() const { return (*this)[0]; }
    Iterator begin() const { return {this, 0}; }
    Iterator end() const { return {this, size()}; }

    const std::vector<std::string>& columns() const { return data_->columns; }
    // Rows inserted, updated or deleted by the statement (0 for a plain SELECT).
    std::int64_t affected() const { return affected_; }

    // For backends.
    template <class T>
    void push(T&& v) {
        data_->cells.emplace_back(std::in_place_type<std::remove_cvref_t<T>>, std::forward<T>(v));
    }
    void set_affected(std::int64_t n) { affected_ = n; }
    const std::string& backend() const { return data_->backend; }

  private:
    std::shared_ptr<detail::ResultData> data_;
    std::int64_t affected_ = 0;
};

}  // namespace cairn::storage
