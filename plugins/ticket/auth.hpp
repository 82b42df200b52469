#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "common/rate_limiter.hpp"
#include "plugins/ticket/model.hpp"
#include "plugins/ticket/passwords.hpp"
#include "storage/value.hpp"

namespace cairn::storage {
class Database;
class Transaction;
}  // namespace cairn::storage
namespace cairn::engine {
class Engine;
}

namespace cairn::ticket {

// HS256 JSON Web Tokens (RFC 7519) with a fixed header; verify() accepts nothing else
// (no "none", no other algorithm) and checks the signature in constant time and `exp`.
class Jwt {
  public:
    explicit Jwt(std::string secret) : secret_(std::move(secret)) {}
    std::string sign(const json& claims) const;
    // The claims of a valid, unexpired token; nullopt otherwise.
    std::optional<json> verify(std::string_view token, std::int64_t now_s) const;

  private:
    std::string secret_;
};

// The JWT secret: CAIRN_JWT_SECRET when set (at least 32 characters, else
// std::invalid_argument), or one generated on first run and kept in the database so
// every process on it agrees.
std::string load_jwt_secret(storage::Database& db, const std::optional<std::string>& configured);

// Access tokens already verified, so that a client presenting its token again is not
// verified again: the token's decoding, its HMAC and its claims' JSON were a fifth of a
// ticket post's handler time. An entry is keyed by a
// BLAKE2b digest of the token's exact text under a key drawn at random per process (the
// token itself is not kept, and one that differs in any byte misses), holds the claims
// the caller read from it, and is not returned at or after its expiry. At most
// `capacity` entries: adding to a full cache first drops the expired, and if none were,
// all. Thread-safe.
class VerifiedTokens {
  public:
    struct Claims {
        std::string user_id;
        std::string session_id;
        std::int64_t exp_s = 0;  // the token's `exp`
    };
    explicit VerifiedTokens(std::size_t capacity = 4096);
    std::optional<Claims> find(std::string_view token, std::int64_t now_s) const;
    void add(std::string_view token, Claims claims, std::int64_t now_s);
    std::size_t size() const;

  private:
    using Digest = std::array<unsigned char, 32>;
    struct DigestHash {
        std::size_t operator()(const Digest& d) const noexcept {
            std::size_t h = 0;  // the digest is uniform already
            std::memcpy(&h, d.data(), sizeof h);
            return h;
        }
    };
    Digest digest(std::string_view token) const;

    std::size_t capacity_;
    std::array<unsigned char, 32> key_{};
    mutable std::mutex mutex_;
    std::unordered_map<Digest, Claims, DigestHash> entries_;  // guarded by mutex_
};

// Who is calling: from a verified access token whose user is active and whose session is
// not revoked (both checked in the database on every request: before its work, or for a
// ticket's creation in the write itself).
struct Principal {
    std::string user_id;
    std::string session_id;
    Role role = Role::user;
    std::string email;
    std::string name;
    bool staff() const { return is_staff(role); }
};

struct AuthSettings {
    std::chrono::seconds access_ttl{15 * 60};
    std::chrono::seconds refresh_ttl{30 * 24 * 3600};
    int ip_per_minute = 100;      // register + login attempts per client address
    int account_per_minute = 10;  // failed password attempts per (account, client address)
    int user_per_minute = 3000;   // authenticated requests per user
};

// The response of register, login and refresh.
struct Session {
    User user;
    std::string access_token;
    std::string refresh_token;
    std::int64_t expires_in = 0;  // seconds
    json to_json() const;
};

// Users' credentials and sessions. A session (a refresh-token family) starts at login;
// each refresh spends its token and issues the next; presenting a spent token again
// revokes the whole family. Thread-safe.
class AuthService {
  public:
    AuthService(storage::Database& db, engine::Engine& engine, std::string secret,
                AuthSettings settings);

    // POST /auth/register: {email, password, name?, skills?}. The user and the
    // `user/signup` event commit together. 409 for a taken email.
    // `client` is the caller's address (server::Request::client), which limits key on.
    Session register_user(const json& body, const std::string& client);
    Session login(const json& body, const std::string& client);
    Session refresh(const json& body);
    void logout(const Principal& who);
    // Verifies "Bearer <token>" (or a bare token) and, in the database, that its user is
    // active and its session live; throws ApiError unauthorized.
    Principal authenticate(std::string_view authorization) const;
    // The token's part of authenticate() alone, without the database: its user and
    // session. A write that trusts them must make the database's check in its own
    // transaction (as TicketPosts does); throws ApiError unauthorized.
    VerifiedTokens::Claims verify_token(std::string_view authorization) const;
    // {current_password, new_password}: every other session of the user is revoked.
    void change_password(const Principal& who, const json& body, const std::string& client);

    // Creates a user (validated by the caller; its password hashed with hash_password(),
    // outside the transaction) and emits `user/signup` in `tx`.
    static User create_user(storage::Transaction& tx, engine::Engine& engine,
                            const std::string& email, const std::string& name,
                            const std::string& password_hash, Role role,
                            const std::vector<std::string>& skills, std::int64_t now);
    // Validates an email address ("a@b.c", at most 254 characters); returns it lower-cased.
    static std::optional<std::string> normalize_email(std::string_view email);
    static constexpr std::size_t kMinPassword = 8;
    static constexpr std::size_t kMaxPassword = 128;

    // Revokes every session of `user_id` in `tx` (deactivation, password change).
    static void revoke_sessions(storage::Transaction& tx, const std::string& user_id,
                                std::string_view reason, std::int64_t now,
                                const std::string& except_session = {});

  private:
    static void revoke_sessions_by_id(storage::Transaction& tx, const std::string& session_id,
                                      std::int64_t now);
    std::int64_t now_ms() const;
    Session start_session(storage::Transaction& tx, const User& user);
    std::string issue_refresh(storage::Transaction& tx, const std::string& session_id,
                              std::int64_t now);
    std::string access_token(const User& user, const std::string& session_id,
                             std::int64_t now) const;
    void limit(const std::string& key, RateLimiter& limiter);
    // Failed password attempts, per (account, client): check before, count each failure.
    static std::string attempts_key(std::string_view email, std::string_view client);
    void check_attempts(const std::string& key);
    void failed_attempt(const std::string& key);

    storage::Database& db_;
    engine::Engine& engine_;
    Jwt jwt_;
    mutable VerifiedTokens verified_;
    AuthSettings settings_;
    RateLimiter ip_limiter_;
    RateLimiter account_limiter_;
    mutable RateLimiter user_limiter_;
};

}  // namespace cairn::ticket
