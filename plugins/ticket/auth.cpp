#include "plugins/ticket/auth.hpp"

#include <fmt/format.h>
#include <sodium.h>

#include <array>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "common/ids.hpp"
#include "engine/engine.hpp"
#include "storage/database.hpp"

namespace cairn::ticket {
namespace {

std::string b64url(std::string_view bytes) {
    std::string out(
        sodium_base64_ENCODED_LEN(bytes.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING), '\0');
    sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()),
                      bytes.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    out.resize(std::strlen(out.c_str()));
    return out;
}

std::optional<std::string> unb64url(std::string_view text) {
    std::string out(text.size(), '\0');
    std::size_t len = 0;
    if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), text.data(),
                          text.size(), nullptr, &len, nullptr,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0)
        return std::nullopt;
    out.resize(len);
    return out;
}

std::string hex(const unsigned char* data, std::size_t n) {
    std::string out(n * 2 + 1, '\0');
    sodium_bin2hex(out.data(), out.size(), data, n);
    out.pop_back();
    return out;
}

std::string random_hex(std::size_t bytes) {
    std::vector<unsigned char> buf(bytes);
    randombytes_buf(buf.data(), buf.size());
    return hex(buf.data(), buf.size());
}

std::string token_hash(std::string_view token) {
    std::array<unsigned char, crypto_generichash_BYTES> digest{};
    crypto_generichash(digest.data(), digest.size(),
                       reinterpret_cast<const unsigned char*>(token.data()), token.size(), nullptr,
                       0);
    return hex(digest.data(), digest.size());
}

std::string hmac(std::string_view key, std::string_view message) {
    std::array<unsigned char, crypto_auth_hmacsha256_BYTES> mac{};
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, reinterpret_cast<const unsigned char*>(key.data()),
                                key.size());
    crypto_auth_hmacsha256_update(&st, reinterpret_cast<const unsigned char*>(message.data()),
                                  message.size());
    crypto_auth_hmacsha256_final(&st, mac.data());
    return {reinterpret_cast<const char*>(mac.data()), mac.size()};
}

const std::string kJwtHeader = b64url(R"({"alg":"HS256","typ":"JWT"})");

ApiError unauthorized(const std::string& message) {
    return ApiError(ErrorCode::unauthorized, message);
}

}  // namespace

// ---- JWT ----------------------------------------------------------------------------

std::string Jwt::sign(const json& claims) const {
    const std::string input = kJwtHeader + "." + b64url(claims.dump());
    return input + "." + b64url(hmac(secret_, input));
}

std::optional<json> Jwt::verify(std::string_view token, std::int64_t now_s) const {
    const auto dot1 = token.find('.');
    const auto dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
    if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos)
        return std::nullopt;
    // Only the one header this server issues is accepted: no algorithm confusion.
    if (token.substr(0, dot1) != kJwtHeader) return std::nullopt;
    const auto signature = unb64url(token.substr(dot2 + 1));
    const std::string expected = hmac(secret_, token.substr(0, dot2));
    if (!signature || signature->size() != expected.size() ||
        sodium_memcmp(signature->data(), expected.data(), expected.size()) != 0)
        return std::nullopt;
    const auto payload = unb64url(token.substr(dot1 + 1, dot2 - dot1 - 1));
    if (!payload) return std::nullopt;
    json claims = json::parse(*payload, nullptr, false);
    if (!claims.is_object() || !claims.contains("exp") || !claims["exp"].is_number_integer())
        return std::nullopt;
    if (claims["exp"].get<std::int64_t>() <= now_s) return std::nullopt;
    return claims;
}

std::string load_jwt_secret(storage::Database& db, const std::optional<std::string>& configured) {
    if (configured) {
        if (configured->size() < 32)
            throw std::invalid_argument(
                "CAIRN_JWT_SECRET must be at least 32 characters (try: openssl rand -hex 32)");
        return *configured;
    }
    return db.transact([](storage::Transaction& tx) {
        tx.exec(
            "INSERT INTO ticket_settings (key, value) VALUES ('jwt_secret', $1) "
            "ON CONFLICT (key) DO NOTHING",
            random_hex(32));
        return tx.exec("SELECT value FROM ticket_settings WHERE key = 'jwt_secret'")
            .front()
            .get<std::string>(0);
    });
}

// ---- verified access tokens ------------------------------------------------------------

VerifiedTokens::VerifiedTokens(std::size_t capacity) : capacity_(capacity) {
    if (sodium_init() < 0) throw std::runtime_error("libsodium failed to initialise");
    randombytes_buf(key_.data(), key_.size());
}

VerifiedTokens::Digest VerifiedTokens::digest(std::string_view token) const {
    Digest d{};
    crypto_generichash(d.data(), d.size(), reinterpret_cast<const unsigned char*>(token.data()),
                       token.size(), key_.data(), key_.size());
    return d;
}

std::optional<VerifiedTokens::Claims> VerifiedTokens::find(std::string_view token,
                                                           std::int64_t now_s) const {
    const Digest d = digest(token);
    std::lock_guard lock(mutex_);
    const auto it = entries_.find(d);
    if (it == entries_.end() || it->second.exp_s <= now_s) return std::nullopt;
    return it->second;
}

void VerifiedTokens::add(std::string_view token, Claims claims, std::int64_t now_s) {
    const Digest d = digest(token);
    std::lock_guard lock(mutex_);
    if (entries_.size() >= capacity_ && !entries_.contains(d)) {
        std::erase_if(entries_, [&](const auto& e) { return e.second.exp_s <= now_s; });
        if (entries_.size() >= capacity_) entries_.clear();
    }
    entries_.insert_or_assign(d, std::move(claims));
}

std::size_t VerifiedTokens::size() const {
    std::lock_guard lock(mutex_);
    return entries_.size();
}

// ---- sessions -----------------------------------------------------------------------

json Session::to_json() const {
    return {{"user", ticket::to_json(user)},
            {"access_token", access_token},
            {"refresh_token", refresh_token},
            {"token_type", "Bearer"},
            {"expires_in", expires_in}};
}

AuthService::AuthService(storage::Database& db, engine::Engine& engine, std::string secret,
                         AuthSettings settings)
    : db_(db),
      engine_(engine),
      jwt_(std::move(secret)),
      settings_(settings),
      ip_limiter_(settings.ip_per_minute),
      account_limiter_(settings.account_per_minute),
      user_limiter_(settings.user_per_minute) {}

std::int64_t AuthService::now_ms() const {
    return engine_.clock().now_ms();
}

namespace {
ApiError too_many(int wait_s) {
    return ApiError(ErrorCode::rate_limited,
                    fmt::format("too many attempts; try again in {} s", wait_s), json::array(),
                    wait_s);
}
}  // namespace

void AuthService::limit(const std::string& key, RateLimiter& limiter) {
    if (auto wait = limiter.take(key, now_ms())) throw too_many(*wait);
}

std::string AuthService::attempts_key(std::string_view email, std::string_view client) {
    return fmt::format("{}|{}", email, client);
}

void AuthService::check_attempts(const std::string& key) {
    if (auto wait = account_limiter_.check(key, now_ms())) throw too_many(*wait);
}

void AuthService::failed_attempt(const std::string& key) {
    account_limiter_.take(key, now_ms());
}

std::optional<std::string> AuthService::normalize_email(std::string_view email) {
    std::string e = trim(email);
    for (char& c : e) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    const auto at = e.find('@');
    if (e.size() > 254 || at == std::string::npos || at == 0 ||
        e.find('@', at + 1) != std::string::npos)
        return std::nullopt;
    const auto dot = e.find('.', at);
    if (dot == std::string::npos || dot == at + 1 || dot + 1 == e.size()) return std::nullopt;
    for (unsigned char c : e)
        if (c <= ' ' || c == '<' || c == '>' || c == ',' || c == ';' || c == '"' || c >= 0x7f)
            return std::nullopt;
    return e;
}

User AuthService::create_user(storage::Transaction& tx, engine::Engine& engine,
                              const std::string& email, const std::string& name,
                              const std::string& password_hash, Role role,
                              const std::vector<std::string>& skills, std::int64_t now) {
    User u;
    u.id = new_id_at(now);
    u.email = email;
    u.name = name;
    u.role = role;
    u.skills = skills;
    u.created_at = u.updated_at = now;
    try {
        tx.exec(
            "INSERT INTO users (id, email, name, password_hash, role, skills, active, created_at, "
            "updated_at) VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7)",
            u.id, u.email, u.name, password_hash, to_string(role), string_array(skills).dump(),
            now);
    } catch (const storage::UniqueViolation&) {
        throw ApiError(ErrorCode::conflict, "an account with this email already exists",
                       json::array({{{"field", "email"}, {"message", "is already registered"}}}));
    }
    engine::EventInput event;
    event.name = "user/signup";
    event.data = {{"user_id", u.id}, {"email", u.email}, {"name", u.name}};
    engine.send(tx, event);
    return u;
}

std::string AuthService::issue_refresh(storage::Transaction& tx, const std::string& session_id,
                                       std::int64_t now) {
    const std::string token = "rt_" + random_hex(32);
    tx.exec(
        "INSERT INTO refresh_tokens (hash, session_id, created_at, expires_at) "
        "VALUES ($1, $2, $3, $4)",
        token_hash(token), session_id, now,
        now + std::chrono::duration_cast<std::chrono::milliseconds>(settings_.refresh_ttl).count());
    return token;
}

std::string AuthService::access_token(const User& user, const std::string& session_id,
                                      std::int64_t now) const {
    const std::int64_t now_s = now / 1000;
    return jwt_.sign({{"sub", user.id},
                      {"sid", session_id},
                      {"role", to_string(user.role)},
                      {"typ", "access"},
                      {"iat", now_s},
                      {"exp", now_s + settings_.access_ttl.count()}});
}

Session AuthService::start_session(storage::Transaction& tx, const User& user) {
    const std::int64_t now = now_ms();
    Session s;
    s.user = user;
    const std::string sid = new_id_at(now);
    tx.exec(
        "INSERT INTO auth_sessions (id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        sid, user.id, now,
        now + std::chrono::duration_cast<std::chrono::milliseconds>(settings_.refresh_ttl).count());
    s.refresh_token = issue_refresh(tx, sid, now);
    s.access_token = access_token(user, sid, now);
    s.expires_in = settings_.access_ttl.count();
    return s;
}

void AuthService::revoke_sessions(storage::Transaction& tx, const std::string& user_id,
                                  std::string_view reason, std::int64_t now,
                                  const std::string& except_session) {
    tx.exec(
        "UPDATE auth_sessions SET revoked_at = $1, revoke_reason = $2 "
        "WHERE user_id = $3 AND revoked_at IS NULL AND id <> $4",
        now, reason, user_id, except_session);
}

Session AuthService::register_user(const json& body, const std::string& client) {
    limit("ip:" + client, ip_limiter_);
    if (!body.is_object())
        throw ApiError(ErrorCode::validation_failed, "the body must be a JSON object");
    Problems problems;
    std::optional<std::string> email;
    if (auto raw = string_field(body, "email", 1, 254, true, problems)) {
        email = normalize_email(*raw);
        if (!email) problems.add("email", "is not a valid email address");
    }
    std::string password;
    if (!body.contains("password") || !body["password"].is_string()) {
        problems.add("password", body.contains("password") ? "must be a string" : "is required");
    } else {
        password = body["password"].get<std::string>();
        if (password.size() < kMinPassword || password.size() > kMaxPassword)
            problems.add("password",
                         fmt::format("must be {} to {} characters", kMinPassword, kMaxPassword));
    }
    auto name = string_field(body, "name", 1, 100, false, problems);
    auto skills = skills_field(body, "skills", 30, problems);
    problems.check();
    limit(attempts_key(*email, client), account_limiter_);
    if (!name) name = email->substr(0, email->find('@'));
    const std::string hash = hash_password(password);  // before the transaction, not in it
    const std::int64_t now = now_ms();
    Session s = db_.transact([&](storage::Transaction& tx) {
        const User u = create_user(tx, engine_, *email, *name, hash, Role::user,
                                   skills.value_or(std::vector<std::string>{}), now);
        return start_session(tx, u);
    });
    return s;
}

Session AuthService::login(const json& body, const std::string& client) {
    limit("ip:" + client, ip_limiter_);
    if (!body.is_object())
        throw ApiError(ErrorCode::validation_failed, "the body must be a JSON object");
    Problems problems;
    auto raw_email = string_field(body, "email", 1, 254, true, problems);
    if (!body.contains("password") || !body["password"].is_string())
        problems.add("password", "is required and must be a string");
    problems.check();
    const std::string email = normalize_email(*raw_email).value_or(*raw_email);
    // Failures count per (account, client): guessing at an account from one place slows
    // that place down, and cannot lock the account's owner out from another.
    const std::string attempts = attempts_key(email, client);
    check_attempts(attempts);
    const std::string password = body["password"].get<std::string>();

    const auto rows = db_.read(
        fmt::format("SELECT {}, password_hash FROM users WHERE email = $1", kUserColumns), email);
    if (rows.empty()) {
        // Spend the same time as a real check, so timing does not reveal which emails exist.
        static const std::string dummy = hash_password("not a real password");
        verify_password(dummy, password);
        failed_attempt(attempts);
        throw unauthorized("invalid email or password");
    }
    const User user = read_user(rows.front());
    if (!verify_password(rows.front().get<std::string>(8), password)) {
        failed_attempt(attempts);
        throw unauthorized("invalid email or password");
    }
    if (!user.active) throw ApiError(ErrorCode::forbidden, "this account is deactivated");
    account_limiter_.reset(attempts);
    return db_.transact([&](storage::Transaction& tx) { return start_session(tx, user); });
}

Session AuthService::refresh(const json& body) {
    if (!body.is_object() || !body.contains("refresh_token") || !body["refresh_token"].is_string())
        throw ApiError(ErrorCode::validation_failed, "refresh_token is required",
                       json::array({{{"field", "refresh_token"},
                                     {"message", "is required and must be a string"}}}));
    const std::string hash = token_hash(body["refresh_token"].get<std::string>());
    const std::int64_t now = now_ms();
    std::optional<ApiError> error;
    std::optional<Session> session;
    db_.transact([&](storage::Transaction& tx) {
        const auto rows = tx.exec(
            "SELECT r.session_id, r.used_at, r.expires_at, s.revoked_at, s.user_id, s.expires_at "
            "FROM refresh_tokens r JOIN auth_sessions s ON s.id = r.session_id WHERE r.hash = $1",
            hash);
        if (rows.empty()) {
            error = unauthorized("unknown refresh token");
            return;
        }
        const auto row = rows.front();
        const auto sid = row.get<std::string>(0);
        const auto reuse = [&] {
            // A spent token presented again: it was stolen or replayed. End the family.
            revoke_sessions_by_id(tx, sid, now);
            error = unauthorized("refresh token already used; the session has been revoked");
        };
        if (!row.is_null(1)) return reuse();
        if (!row.is_null(3)) {
            error = unauthorized("the session has been revoked; log in again");
            return;
        }
        if (row.get<std::int64_t>(2) <= now) {
            error = unauthorized("refresh token expired; log in again");
            return;
        }
        // A session lasts refresh_ttl from its login however often it is refreshed.
        if (row.get<std::int64_t>(5) <= now) {
            error = unauthorized("the session has expired; log in again");
            return;
        }
        if (tx.exec("UPDATE refresh_tokens SET used_at = $1 WHERE hash = $2 AND used_at IS NULL",
                    now, hash)
                .affected() != 1)
            return reuse();
        const auto users = tx.exec(fmt::format("SELECT {} FROM users WHERE id = $1", kUserColumns),
                                   row.get<std::string>(4));
        if (users.empty() || !read_user(users.front()).active) {
            error = unauthorized("the account is deactivated");
            return;
        }
        Session s;
        s.user = read_user(users.front());
        s.refresh_token = issue_refresh(tx, sid, now);
        s.access_token = access_token(s.user, sid, now);
        s.expires_in = settings_.access_ttl.count();
        session = std::move(s);
    });
    if (error) throw *error;
    return std::move(*session);
}

void AuthService::revoke_sessions_by_id(storage::Transaction& tx, const std::string& session_id,
                                        std::int64_t now) {
    tx.exec(
        "UPDATE auth_sessions SET revoked_at = $1, revoke_reason = 'refresh token reuse' "
        "WHERE id = $2 AND revoked_at IS NULL",
        now, session_id);
}

void AuthService::logout(const Principal& who) {
    db_.exec(
        "UPDATE auth_sessions SET revoked_at = $1, revoke_reason = 'logout' "
        "WHERE id = $2 AND revoked_at IS NULL",
        now_ms(), who.session_id);
}

VerifiedTokens::Claims AuthService::verify_token(std::string_view authorization) const {
    std::string token = trim(authorization);
    if (token.starts_with("Bearer ") || token.starts_with("bearer ")) token = trim(token.substr(7));
    if (token.empty())
        throw unauthorized("a bearer token is required: Authorization: Bearer <access_token>");
    const std::int64_t now = now_ms();
    const std::int64_t now_s = now / 1000;
    const auto limited = [&](VerifiedTokens::Claims claims) {
        if (auto wait = user_limiter_.take(claims.user_id, now))
            throw ApiError(ErrorCode::rate_limited,
                           fmt::format("more than {} requests a minute; try again in {} s",
                                       user_limiter_.per_minute(), *wait),
                           json::array(), *wait);
        return claims;
    };
    if (auto verified = verified_.find(token, now_s)) return limited(std::move(*verified));
    const auto claims = jwt_.verify(token, now_s);
    if (!claims || claims->value("typ", "") != "access" || !(*claims)["sub"].is_string() ||
        !(*claims)["sid"].is_string())
        throw unauthorized("the access token is invalid or expired");
    VerifiedTokens::Claims verified{(*claims)["sub"].get<std::string>(),
                                    (*claims)["sid"].get<std::string>(),
                                    (*claims)["exp"].get<std::int64_t>()};
    verified_.add(token, verified, now_s);
    return limited(std::move(verified));
}

Principal AuthService::authenticate(std::string_view authorization) const {
    auto token = verify_token(authorization);
    Principal p;
    p.user_id = std::move(token.user_id);
    p.session_id = std::move(token.session_id);
    const auto rows = db_.read(
        "SELECT u.role, u.email, u.name, u.active, s.revoked_at FROM users u "
        "JOIN auth_sessions s ON s.user_id = u.id WHERE u.id = $1 AND s.id = $2",
        p.user_id, p.session_id);
    if (rows.empty()) throw unauthorized("the access token's user no longer exists");
    const auto row = rows.front();
    if (row.get<std::int64_t>(3) == 0) throw unauthorized("the account is deactivated");
    if (!row.is_null(4)) throw unauthorized("the session has ended; log in again");
    p.role = parse_role(row.get<std::string>(0)).value_or(Role::user);
    p.email = row.get<std::string>(1);
    p.name = row.get<std::string>(2);
    return p;
}

void AuthService::change_password(const Principal& who, const json& body,
                                  const std::string& client) {
    if (!body.is_object())
        throw ApiError(ErrorCode::validation_failed, "the body must be a JSON object");
    Problems problems;
    if (!body.contains("current_password") || !body["current_password"].is_string())
        problems.add("current_password", "is required and must be a string");
    if (!body.contains("new_password") || !body["new_password"].is_string()) {
        problems.add("new_password", "is required and must be a string");
    } else {
        const auto n = body["new_password"].get<std::string>().size();
        if (n < kMinPassword || n > kMaxPassword)
            problems.add("new_password",
                         fmt::format("must be {} to {} characters", kMinPassword, kMaxPassword));
    }
    problems.check();
    const std::string attempts = attempts_key(who.email, client);
    check_attempts(attempts);
    const auto hash = db_.read("SELECT password_hash FROM users WHERE id = $1", who.user_id)
                          .front()
                          .get<std::string>(0);
    if (!verify_password(hash, body["current_password"].get<std::string>())) {
        failed_attempt(attempts);
        throw ApiError(ErrorCode::validation_failed, "the current password is wrong",
                       json::array({{{"field", "current_password"}, {"message", "is wrong"}}}));
    }
    const std::string fresh = hash_password(body["new_password"].get<std::string>());
    const std::int64_t now = now_ms();
    db_.transact([&](storage::Transaction& tx) {
        tx.exec("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3", fresh, now,
                who.user_id);
        revoke_sessions(tx, who.user_id, "password changed", now, who.session_id);
    });
}

}  // namespace cairn::ticket
