#pragma once

#include <string>
#include <utility>
#include <vector>

#include "storage/value.hpp"

namespace cairn::storage::detail {

// The parameters of a statement written piece by piece: `param(v)` appends v and returns
// its placeholder ("$3").
struct Params {
    std::vector<Value> values;
    template <class T>
    std::string operator()(T&& v) {
        values.push_back(to_value(std::forward<T>(v)));
        std::string placeholder(1, '$');  // appended, not `"$" + ...`: GCC 12 -O3 -Wrestrict
        placeholder += std::to_string(values.size());
        return placeholder;
    }
};

}  // namespace cairn::storage::detail
