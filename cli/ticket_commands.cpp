#include "cli/ticket_commands.hpp"

#include <fmt/format.h>
#include <sodium.h>

#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/app.hpp"
#include "common/time.hpp"
#include "engine/engine.hpp"
#include "plugins/ticket/auth.hpp"
#include "plugins/ticket/mail.hpp"
#include "storage/database.hpp"

namespace cairn::cli {

namespace {
std::string generate_password() {
    static constexpr std::string_view kAlphabet =
        "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    std::string out;
    for (int i = 0; i < 20; ++i)
        out.push_back(kAlphabet[randombytes_uniform(static_cast<std::uint32_t>(kAlphabet.size()))]);
    return out;
}
}  // namespace

int users_create(storage::Database& db, engine::Engine& engine, const NewUser& in, bool as_json) {
    using ticket::AuthService;
    const auto email = AuthService::normalize_email(in.email);
    if (!email) {
        std::cerr << "cairn: error: --email '" << in.email << "' is not a valid email address\n";
        return kExitUsage;
    }
    std::string password = in.password;
    bool generated = false;
    if (in.password_stdin) {
        std::getline(std::cin, password);
        if (!password.empty() && password.back() == '\r') password.pop_back();
    } else if (password.empty()) {
        password = generate_password();
        generated = true;
    }
    if (password.size() < AuthService::kMinPassword ||
        password.size() > AuthService::kMaxPassword) {
        std::cerr << fmt::format("cairn: error: the password must be {} to {} characters\n",
                                 AuthService::kMinPassword, AuthService::kMaxPassword);
        return kExitUsage;
    }
    std::vector<std::string> skills;
    for (std::size_t start = 0; start <= in.skills.size();) {
        auto comma = in.skills.find(',', start);
        if (comma == std::string::npos) comma = in.skills.size();
        auto skill =
            ticket::normalize_skill(std::string_view(in.skills).substr(start, comma - start));
        if (!skill.empty() && std::find(skills.begin(), skills.end(), skill) == skills.end())
            skills.push_back(std::move(skill));
        start = comma + 1;
    }
    const std::string name =
        ticket::trim(in.name).empty() ? email->substr(0, email->find('@')) : ticket::trim(in.name);
    const std::string hash = ticket::hash_password(password);
    ticket::User user;
    try {
        user = db.transact([&](storage::Transaction& tx) {
            return AuthService::create_user(
                tx, engine, *email, name, hash,
                ticket::parse_role(in.role).value_or(ticket::Role::user), skills,
                engine.clock().now_ms());
        });
    } catch (const ticket::ApiError& e) {
        std::cerr << "cairn: error: " << e.what() << '\n';
        return kExitFailed;
    }
    if (as_json) {
        auto j = ticket::to_json(user);
        if (generated) j["password"] = password;
        std::cout << j.dump(2) << '\n';
    } else {
        std::cout << fmt::format("created {} {} <{}> (id {})\n", ticket::to_string(user.role),
                                 user.name, user.email, user.id);
        if (generated)
            std::cout << "password: " << password << "  (shown once; change it after logging in)\n";
    }
    return kExitOk;
}

int mail_list(storage::Database& db, const std::optional<std::string>& to, int limit,
              bool as_json) {
    const auto mails = ticket::list_outbox(db, to, limit);
    if (as_json) {
        nlohmann::json out = nlohmann::json::array();
        for (const auto& m : mails)
            out.push_back({{"id", m.id},
                           {"to", m.to},
                           {"subject", m.subject},
                           {"body", m.body},
                           {"transport", m.transport},
                           {"created_at", format_rfc3339(m.created_at)}});
        std::cout << out.dump(2) << '\n';
        return kExitOk;
    }
    std::cout << fmt::format("{:<24}  {:<9} {:<32} {}\n", "CREATED", "TRANSPORT", "TO", "SUBJECT");
    for (const auto& m : mails)
        std::cout << fmt::format("{:<24}  {:<9} {:<32} {}\n", format_rfc3339(m.created_at),
                                 m.transport, m.to, m.subject);
    if (mails.empty()) std::cout << "(no mail)\n";
    return kExitOk;
}

}  // namespace cairn::cli
