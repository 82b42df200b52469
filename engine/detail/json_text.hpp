#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "cairn/workflow.hpp"
#include "storage/records.hpp"

namespace cairn::engine::detail {

// JSON as the engine stores it: compact text, invalid UTF-8 replaced rather than thrown.
std::string dump(const json& j);
// Stored JSON text back as a value; null for absent (or unreadable) text.
json parse_or_null(const std::optional<std::string>& text);
// An event as workflow code sees it: {id, name, data, ts}.
json event_json(const storage::EventRecord& e);
// A step's or run's error: {type, message}.
json error_json(std::string_view type, std::string_view message);
// A dotted path ("data.user.id", "data.items.0") into a JSON value; null when absent.
json lookup(const json& root, std::string_view path);

}  // namespace cairn::engine::detail
