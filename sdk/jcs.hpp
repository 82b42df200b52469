#pragma once

#include <string>

#include "cairn/workflow.hpp"

namespace cairn::sdk {

// `j` in the JSON Canonicalization Scheme (RFC 8785): object keys sorted by UTF-16 code
// units, no whitespace, strings with the minimal escapes and numbers as ECMAScript
// prints them. An Inngest SDK re-serializes the body it received this way before checking
// its signature, so Cairn sends, and signs, exactly these bytes. Throws
// std::invalid_argument for a NaN or infinite number.
std::string canonical(const json& j);

}  // namespace cairn::sdk
