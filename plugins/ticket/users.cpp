#include "plugins/ticket/users.hpp"

#include <fmt/format.h>

#include "engine/clock.hpp"
#include "storage/database.hpp"

namespace cairn::ticket {

User UserService::get(storage::Transaction& tx, const std::string& id) const {
    const auto rows = tx.exec(fmt::format("SELECT {} FROM users WHERE id = $1", kUserColumns), id);
    if (rows.empty()) throw ApiError(ErrorCode::not_found, "no such user");
    return read_user(rows.front());
}

User UserService::get(const std::string& id) const {
    return db_.transact([&](storage::Transaction& tx) { return get(tx, id); },
                        storage::Access::read_only);
}

User UserService::update_me(const Principal& who, const json& body) {
    if (!body.is_object())
        throw ApiError(ErrorCode::validation_failed, "the body must be a JSON object");
    Problems problems;
    auto name = string_field(body, "name", 1, 100, false, problems);
    auto skills = skills_field(body, "skills", 30, problems);
    problems.check();
    return db_.transact([&](storage::Transaction& tx) {
        User u = get(tx, who.user_id);
        if (name) u.name = *name;
        if (skills) u.skills = *skills;
        u.updated_at = clock_.now_ms();
        tx.exec("UPDATE users SET name = $1, skills = $2, updated_at = $3 WHERE id = $4", u.name,
                string_array(u.skills).dump(), u.updated_at, u.id);
        return u;
    });
}

UserPage UserService::list(const UserQuery& q) const {
    Where where;
    if (q.role) where.sql += " AND role = " + where.arg(std::string(to_string(*q.role)));
    if (q.active) where.sql += " AND active = " + where.arg(std::int64_t{*q.active ? 1 : 0});
    if (q.search) {
        const auto p = where.arg(fmt::format("%{}%", like_escape(*q.search)));
        where.sql += fmt::format(
            " AND (lower(email) LIKE {0} ESCAPE '\\' OR lower(name) LIKE {0} ESCAPE '\\')", p);
    }
    return db_.transact(
        [&](storage::Transaction& tx) {
            const auto found =
                fetch_page(tx, "users", kUserColumns, where, "created_at, id", q.page, q.limit);
            UserPage page;
            page.total = found.total;
            for (const auto& r : found.rows) page.users.push_back(read_user(r));
            return page;
        },
        storage::Access::read_only);
}

void UserService::keep_an_admin(storage::Transaction& tx, const User& target) const {
    if (target.role != Role::admin || !target.active) return;
    // The active admins stay locked until this transaction ends: two admins demoting each
    // other at once are checked one after the other, and the second finds no other admin.
    const auto admins = tx.exec(fmt::format(
        "SELECT id FROM users WHERE role = 'admin' AND active = 1{}", tx.dialect().lock_rows()));
    int others = 0;
    for (const auto row : admins) others += row.get<std::string>(0) != target.id ? 1 : 0;
    if (others == 0)
        throw ApiError(ErrorCode::conflict,
                       "this is the last active admin; make another admin first");
}

User UserService::update(const std::string& id, const json& body) {
    if (!body.is_object())
        throw ApiError(ErrorCode::validation_failed, "the body must be a JSON object");
    Problems problems;
    std::optional<Role> role;
    if (body.contains("role")) {
        if (!body["role"].is_string() || !(role = parse_role(body["role"].get<std::string>())))
            problems.add("role", "must be user, moderator or admin");
    }
    auto name = string_field(body, "name", 1, 100, false, problems);
    auto skills = skills_field(body, "skills", 30, problems);
    std::optional<bool> active;
    if (body.contains("active")) {
        if (!body["active"].is_boolean())
            problems.add("active", "must be true or false");
        else
            active = body["active"].get<bool>();
    }
    problems.check();
    const std::int64_t now = clock_.now_ms();
    return db_.transact([&](storage::Transaction& tx) {
        User u = get(tx, id);
        if ((role && *role != Role::admin) || (active && !*active)) keep_an_admin(tx, u);
        if (role) u.role = *role;
        if (name) u.name = *name;
        if (skills) u.skills = *skills;
        const bool deactivating = active && !*active && u.active;
        if (active) u.active = *active;
        u.updated_at = now;
        tx.exec(
            "UPDATE users SET role = $1, name = $2, skills = $3, active = $4, updated_at = $5 "
            "WHERE id = $6",
            to_string(u.role), u.name, string_array(u.skills).dump(),
            std::int64_t{u.active ? 1 : 0}, now, u.id);
        if (deactivating) AuthService::revoke_sessions(tx, u.id, "deactivated", now);
        return u;
    });
}

User UserService::set_active(const std::string& id, bool active) {
    return update(id, json{{"active", active}});
}

void UserService::remove(const Principal& actor, const std::string& id) {
    if (actor.user_id == id)
        throw ApiError(ErrorCode::conflict, "you cannot delete your own account");
    db_.transact([&](storage::Transaction& tx) {
        const User u = get(tx, id);
        keep_an_admin(tx, u);
        // Their tickets (and replies) go with them; tickets assigned to them become
        // unassigned (foreign keys, see schema.cpp).
        tx.exec("DELETE FROM users WHERE id = $1", id);
    });
}

}  // namespace cairn::ticket
