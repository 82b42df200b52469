#pragma once

#include <optional>
#include <string>

namespace cairn::storage {
class Database;
}
namespace cairn::engine {
class Engine;
}

namespace cairn::cli {

struct NewUser {
    std::string email;
    std::string name;
    std::string role = "user";
    std::string skills;  // comma-separated
    std::string password;
    bool password_stdin = false;
};

// `cairn users create`: the user and its user/signup event commit together; a generated
// password is printed once. Exit 1 when the email is taken, 2 for invalid input.
int users_create(storage::Database& db, engine::Engine& engine, const NewUser& user, bool as_json);
// `cairn mail list`: recorded mails (outbox and SMTP), newest first.
int mail_list(storage::Database& db, const std::optional<std::string>& to, int limit, bool as_json);

}  // namespace cairn::cli
