#include "engine/detail/json_text.hpp"

namespace cairn::engine::detail {

std::string dump(const json& j) {
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

json parse_or_null(const std::optional<std::string>& text) {
    if (!text) return nullptr;
    return json::parse(*text, nullptr, false);
}

json event_json(const storage::EventRecord& e) {
    json data = json::parse(e.data, nullptr, false);
    if (data.is_discarded()) data = e.data;
    return json{{"id", e.id}, {"name", e.name}, {"data", std::move(data)}, {"ts", e.ts}};
}

json error_json(std::string_view type, std::string_view message) {
    return json{{"type", type}, {"message", message}};
}

json lookup(const json& root, std::string_view path) {
    const json* cur = &root;
    while (!path.empty()) {
        const auto dot = path.find('.');
        const std::string part(path.substr(0, dot));
        path = dot == std::string_view::npos ? std::string_view{} : path.substr(dot + 1);
        if (cur->is_object()) {
            auto it = cur->find(part);
            if (it == cur->end()) return nullptr;
            cur = &*it;
        } else if (cur->is_array() && !part.empty() && part.size() < 10 &&
                   part.find_first_not_of("0123456789") == std::string::npos) {
            const auto i = std::stoul(part);
            if (i >= cur->size()) return nullptr;
            cur = &(*cur)[i];
        } else {
            return nullptr;
        }
    }
    return *cur;
}

}  // namespace cairn::engine::detail
