#pragma once

#include <optional>
#include <string>
#include <vector>

#include "plugins/ticket/auth.hpp"
#include "plugins/ticket/model.hpp"

namespace cairn::storage {
class Database;
}
namespace cairn::engine {
class Clock;
}

namespace cairn::ticket {

struct UserQuery {
    std::optional<Role> role;
    std::optional<bool> active;
    std::optional<std::string> search;  // in email or name, case-insensitive
    int page = 1;
    int limit = 20;
};

struct UserPage {
    std::vector<User> users;
    std::int64_t total = 0;
};

// Profiles and admin user management. Thread-safe. Failures are ApiError.
class UserService {
  public:
    UserService(storage::Database& db, const engine::Clock& clock) : db_(db), clock_(clock) {}

    User get(const std::string& id) const;  // not_found when missing
    // PATCH /users/me: {name?, skills?}.
    User update_me(const Principal& who, const json& body);

    // Admin only (checked by the caller).
    UserPage list(const UserQuery& query) const;
    // {role?, skills?, name?, active?}. Keeps at least one active admin (409).
    User update(const std::string& id, const json& body);
    User set_active(const std::string& id, bool active);
    void remove(const Principal& actor, const std::string& id);

  private:
    // Throws conflict when `target` is the last active admin and would stop being one.
    void keep_an_admin(storage::Transaction& tx, const User& target) const;
    User get(storage::Transaction& tx, const std::string& id) const;

    storage::Database& db_;
    const engine::Clock& clock_;
};

}  // namespace cairn::ticket
