#include "plugins/ticket/model.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <unordered_map>

#include "common/time.hpp"
#include "plugins/ticket/ai.hpp"
#include "storage/database.hpp"

namespace cairn::ticket {

int http_status(ErrorCode code) {
    switch (code) {
        case ErrorCode::validation_failed:
        case ErrorCode::invalid_json:
            return 400;
        case ErrorCode::unauthorized:
            return 401;
        case ErrorCode::forbidden:
            return 403;
        case ErrorCode::not_found:
            return 404;
        case ErrorCode::conflict:
            return 409;
        case ErrorCode::rate_limited:
            return 429;
        case ErrorCode::unavailable:
            return 503;
    }
    return 500;
}

std::string_view to_string(ErrorCode code) {
    switch (code) {
        case ErrorCode::validation_failed:
            return "validation_failed";
        case ErrorCode::invalid_json:
            return "invalid_json";
        case ErrorCode::unauthorized:
            return "unauthorized";
        case ErrorCode::forbidden:
            return "forbidden";
        case ErrorCode::not_found:
            return "not_found";
        case ErrorCode::conflict:
            return "conflict";
        case ErrorCode::rate_limited:
            return "rate_limited";
        case ErrorCode::unavailable:
            return "unavailable";
    }
    return "internal";
}

std::string_view to_string(Role role) {
    switch (role) {
        case Role::user:
            return "user";
        case Role::moderator:
            return "moderator";
        case Role::admin:
            return "admin";
    }
    return "user";
}

std::optional<Role> parse_role(std::string_view text) {
    if (text == "user") return Role::user;
    if (text == "moderator") return Role::moderator;
    if (text == "admin") return Role::admin;
    return std::nullopt;
}

bool is_status(std::string_view s) {
    return std::find(std::begin(kStatuses), std::end(kStatuses), s) != std::end(kStatuses);
}
bool is_priority(std::string_view s) {
    return std::find(std::begin(kPriorities), std::end(kPriorities), s) != std::end(kPriorities);
}

std::string like_escape(std::string_view text) {
    std::string out;
    for (char c : text) {
        if (c == '%' || c == '_' || c == '\\') out += '\\';
        out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    return out;
}

json string_array(const std::vector<std::string>& v) {
    json out = json::array();
    for (const auto& s : v) out.push_back(s);
    return out;
}

std::vector<std::string> parse_string_array(const std::string& text) {
    std::vector<std::string> out;
    const json j = json::parse(text, nullptr, false);
    if (!j.is_array()) return out;
    for (const auto& e : j)
        if (e.is_string()) out.push_back(e.get<std::string>());
    return out;
}

namespace {
json opt_time(const std::optional<std::int64_t>& ms) {
    return ms ? json(format_rfc3339(*ms)) : json(nullptr);
}
template <class T>
json opt(const std::optional<T>& v) {
    return v ? json(*v) : json(nullptr);
}
}  // namespace

json to_json(const User& u) {
    return {{"id", u.id},
            {"email", u.email},
            {"name", u.name},
            {"role", to_string(u.role)},
            {"skills", string_array(u.skills)},
            {"active", u.active},
            {"created_at", format_rfc3339(u.created_at)},
            {"updated_at", format_rfc3339(u.updated_at)}};
}

User read_user(const storage::Row& row) {
    User u;
    u.id = row.get<std::string>(0);
    u.email = row.get<std::string>(1);
    u.name = row.get<std::string>(2);
    u.role = parse_role(row.get<std::string>(3)).value_or(Role::user);
    u.skills = parse_string_array(row.get<std::string>(4));
    u.active = row.get<std::int64_t>(5) != 0;
    u.created_at = row.get<std::int64_t>(6);
    u.updated_at = row.get<std::int64_t>(7);
    return u;
}

json to_json(const Ticket& t) {
    // Member by member: an initializer list copies every value once more (the response of
    // every ticket route is built here).
    json j = json::object();
    j["id"] = t.id;
    j["title"] = t.title;
    j["description"] = t.description;
    j["tags"] = string_array(t.tags);
    j["status"] = t.status;
    j["priority"] = opt(t.priority);
    j["deadline"] = opt_time(t.deadline);
    j["created_by"] = t.created_by;
    j["assigned_to"] = opt(t.assigned_to);
    j["helpful_notes"] = opt(t.helpful_notes);
    j["related_skills"] = string_array(t.related_skills);
    j["summary"] = opt(t.summary);
    j["run_id"] = opt(t.run_id);
    j["created_at"] = format_rfc3339(t.created_at);
    j["updated_at"] = format_rfc3339(t.updated_at);
    return j;
}

Ticket read_ticket(const storage::Row& row, std::size_t first) {
    const std::size_t c = first;
    Ticket t;
    t.id = row.get<std::string>(c);
    t.title = row.get<std::string>(c + 1);
    t.description = row.get<std::string>(c + 2);
    t.tags = parse_string_array(row.get<std::string>(c + 3));
    t.status = row.get<std::string>(c + 4);
    t.priority = row.get_opt<std::string>(c + 5);
    t.deadline = row.get_opt<std::int64_t>(c + 6);
    t.created_by = row.get<std::string>(c + 7);
    t.assigned_to = row.get_opt<std::string>(c + 8);
    t.helpful_notes = row.get_opt<std::string>(c + 9);
    t.related_skills = parse_string_array(row.get<std::string>(c + 10));
    t.summary = row.get_opt<std::string>(c + 11);
    t.run_id = row.get_opt<std::string>(c + 12);
    t.created_at = row.get<std::int64_t>(c + 13);
    t.updated_at = row.get<std::int64_t>(c + 14);
    return t;
}

PageRows fetch_page(storage::Transaction& tx, std::string_view table, std::string_view columns,
                    const Where& where, std::string_view order, int page, int limit) {
    PageRows out;
    out.total =
        tx.exec_values(fmt::format("SELECT COUNT(*) FROM {} {}", table, where.sql), where.values)
            .front()
            .get<std::int64_t>(0);
    auto args = where.values;
    args.emplace_back(std::int64_t{limit});
    args.emplace_back(std::int64_t{(page - 1) * limit});
    out.rows =
        tx.exec_values(fmt::format("SELECT {} FROM {} {} ORDER BY {} LIMIT ${} OFFSET ${}", columns,
                                   table, where.sql, order, args.size() - 1, args.size()),
                       args);
    return out;
}

json to_json(const Analysis& a) {
    return {{"priority", a.priority},
            {"helpful_notes", a.helpful_notes},
            {"related_skills", string_array(a.related_skills)},
            {"summary", a.summary}};
}

Analysis validate_analysis(const json& j) {
    if (!j.is_object()) throw std::runtime_error("analysis is not a JSON object");
    Analysis a;
    auto text = [&](const char* field, std::size_t max) {
        if (!j.contains(field) || !j[field].is_string())
            throw std::runtime_error(std::string("analysis field '") + field +
                                     "' is missing or not a string");
        std::string v = trim(j[field].get<std::string>());
        if (v.empty())
            throw std::runtime_error(std::string("analysis field '") + field + "' is empty");
        if (v.size() > max) v.resize(max);
        return v;
    };
    std::string priority = text("priority", 20);
    std::transform(priority.begin(), priority.end(), priority.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (priority == "urgent" || priority == "critical") priority = "high";
    if (!is_priority(priority))
        throw std::runtime_error("analysis priority '" + priority + "' is not low, medium or high");
    a.priority = priority;
    a.helpful_notes = text("helpful_notes", 8000);
    a.summary = text("summary", 300);
    std::replace(a.summary.begin(), a.summary.end(), '\n', ' ');
    if (!j.contains("related_skills") || !j["related_skills"].is_array())
        throw std::runtime_error("analysis field 'related_skills' is missing or not an array");
    for (const auto& s : j["related_skills"]) {
        if (!s.is_string()) throw std::runtime_error("analysis related_skills holds a non-string");
        std::string skill = normalize_skill(s.get<std::string>());
        if (skill.empty() || skill.size() > 50) continue;
        if (std::find(a.related_skills.begin(), a.related_skills.end(), skill) ==
            a.related_skills.end())
            a.related_skills.push_back(skill);
        if (a.related_skills.size() == 10) break;
    }
    return a;
}

std::string trim(std::string_view s) {
    const auto ws = " \t\r\n\f\v";
    const auto b = s.find_first_not_of(ws);
    if (b == std::string_view::npos) return {};
    const auto e = s.find_last_not_of(ws);
    return std::string(s.substr(b, e - b + 1));
}

std::string normalize_skill(std::string_view text) {
    std::string out;
    bool space = false;
    for (unsigned char c : trim(text)) {
        if (std::isspace(c)) {
            space = true;
            continue;
        }
        if (space && !out.empty()) out.push_back(' ');
        space = false;
        out.push_back(static_cast<char>(std::tolower(c)));
    }
    static const auto synonyms = [] {
        std::unordered_map<std::string, std::string> m;
        for (const auto& skill : skill_taxonomy()) {
            m.emplace(std::string(skill.name), std::string(skill.name));
            for (auto syn : skill.synonyms) m.emplace(std::string(syn), std::string(skill.name));
        }
        return m;
    }();
    if (auto it = synonyms.find(out); it != synonyms.end()) return it->second;
    return out;
}

namespace {
// UTF-8 aware length in code points, so limits count characters, not bytes.
std::size_t length_chars(std::string_view s) {
    std::size_t n = 0;
    for (unsigned char c : s)
        if ((c & 0xC0) != 0x80) ++n;
    return n;
}
}  // namespace

std::optional<std::string> string_field(const json& body, const std::string& name,
                                        std::size_t min_len, std::size_t max_len, bool required,
                                        Problems& problems) {
    if (!body.contains(name) || body[name].is_null()) {
        if (required) problems.add(name, "is required");
        return std::nullopt;
    }
    if (!body[name].is_string()) {
        problems.add(name, "must be a string");
        return std::nullopt;
    }
    std::string v = trim(body[name].get<std::string>());
    const std::size_t n = length_chars(v);
    if (n < min_len || n > max_len) {
        problems.add(name, min_len > 0
                               ? "must be " + std::to_string(min_len) + " to " +
                                     std::to_string(max_len) + " characters"
                               : "must be at most " + std::to_string(max_len) + " characters");
        return std::nullopt;
    }
    return v;
}

std::optional<std::vector<std::string>> skills_field(const json& body, const std::string& name,
                                                     std::size_t max, Problems& problems) {
    if (!body.contains(name)) return std::nullopt;
    const json& v = body[name];
    if (!v.is_array()) {
        problems.add(name, "must be an array of strings");
        return std::nullopt;
    }
    std::vector<std::string> out;
    for (const auto& e : v) {
        if (!e.is_string()) {
            problems.add(name, "must be an array of strings");
            return std::nullopt;
        }
        std::string s = normalize_skill(e.get<std::string>());
        if (s.empty() || s.size() > 50) {
            problems.add(name, "each skill must be 1 to 50 characters");
            return std::nullopt;
        }
        if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(std::move(s));
    }
    if (out.size() > max) {
        problems.add(name, "at most " + std::to_string(max) + " skills");
        return std::nullopt;
    }
    return out;
}

}  // namespace cairn::ticket
