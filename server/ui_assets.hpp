#pragma once

#include <span>
#include <string_view>

namespace cairn::server {

// A file of the inspector UI (server/ui/), compiled into the binary by CMake.
struct UiAsset {
    std::string_view name;  // "index.html", "app.js", ...
    std::string_view content_type;
    std::string_view body;
};

std::span<const UiAsset> ui_assets();

}  // namespace cairn::server
