#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "plugins/ticket/errors.hpp"
#include "storage/result.hpp"
#include "storage/value.hpp"

namespace cairn::storage {
class Transaction;
}

namespace cairn::ticket {

using json = nlohmann::json;

enum class Role { user, moderator, admin };
std::string_view to_string(Role role);
std::optional<Role> parse_role(std::string_view text);
inline bool is_staff(Role role) {
    return role != Role::user;
}

inline constexpr std::string_view kStatuses[] = {"open", "in_progress", "resolved", "closed"};
inline constexpr std::string_view kPriorities[] = {"low", "medium", "high"};
bool is_status(std::string_view s);
bool is_priority(std::string_view s);

struct User {
    std::string id;
    std::string email;  // lower-case
    std::string name;
    Role role = Role::user;
    std::vector<std::string> skills;  // normalised (see normalize_skill)
    bool active = true;
    std::int64_t created_at = 0;
    std::int64_t updated_at = 0;
};
// The public shape: never the password hash.
json to_json(const User& user);
// Reads the columns of kUserColumns.
User read_user(const storage::Row& row);
inline constexpr std::string_view kUserColumns =
    "id, email, name, role, skills, active, created_at, updated_at";

struct Ticket {
    std::string id;
    std::string title;
    std::string description;
    std::vector<std::string> tags;
    std::string status = "open";
    std::optional<std::string> priority;  // null until analysed or set by staff
    std::optional<std::int64_t> deadline;
    std::string created_by;
    std::optional<std::string> assigned_to;
    std::optional<std::string> helpful_notes;
    std::vector<std::string> related_skills;
    std::optional<std::string> summary;
    std::optional<std::string> run_id;  // the ticket-created run
    std::int64_t created_at = 0;
    std::int64_t updated_at = 0;
};
json to_json(const Ticket& ticket);
// Reads the columns of kTicketColumns, starting at column `first`.
Ticket read_ticket(const storage::Row& row, std::size_t first = 0);
inline constexpr std::string_view kTicketColumns =
    "id, title, description, tags, status, priority, deadline, created_by, assigned_to, "
    "helpful_notes, related_skills, summary, run_id, created_at, updated_at";

// What the AI analysis of a ticket produces (validated, see validate_analysis).
struct Analysis {
    std::string priority;  // low, medium, high
    std::string helpful_notes;
    std::vector<std::string> related_skills;
    std::string summary;  // one line
};
json to_json(const Analysis& analysis);
// Checks a model's answer field by field: throws std::runtime_error naming the first
// problem (a retried step error), so a partial answer never reaches a ticket.
Analysis validate_analysis(const json& j);

// Lower-case, trimmed, inner whitespace collapsed, a known synonym replaced by its skill
// ("ReactJS" -> "react"); empty when nothing is left.
std::string normalize_skill(std::string_view text);

// Text field helpers for validation.
std::string trim(std::string_view s);
// The `name` string field of `body` (trimmed), checked for presence, type and length; adds
// to `problems` and returns nullopt when invalid or (if !required) absent.
std::optional<std::string> string_field(const json& body, const std::string& name,
                                        std::size_t min_len, std::size_t max_len, bool required,
                                        Problems& problems);
// A list of skills (strings), normalised and de-duplicated; at most `max` entries.
std::optional<std::vector<std::string>> skills_field(const json& body, const std::string& name,
                                                     std::size_t max, Problems& problems);

// `text` lower-cased with LIKE's wildcards escaped, for `lower(col) LIKE $n ESCAPE '\'`.
std::string like_escape(std::string_view text);

// A WHERE clause grown from optional filters, with numbered placeholders for its values.
struct Where {
    std::string sql = "WHERE 1 = 1";
    std::vector<storage::Value> values;
    // Appends `value` and returns its placeholder ("$3").
    std::string arg(storage::Value value) {
        values.push_back(std::move(value));
        std::string placeholder(1, '$');  // appended, not `"$" + ...`: GCC 12 -O3 -Wrestrict
        placeholder += std::to_string(values.size());
        return placeholder;
    }
};

// One page of `columns` from `table` under `where` in `order`, and the count of all rows
// matching (for list responses' `total`).
struct PageRows {
    std::int64_t total = 0;
    storage::Result rows;
};
PageRows fetch_page(storage::Transaction& tx, std::string_view table, std::string_view columns,
                    const Where& where, std::string_view order, int page, int limit);

json string_array(const std::vector<std::string>& v);
std::vector<std::string> parse_string_array(const std::string& text);

}  // namespace cairn::ticket
