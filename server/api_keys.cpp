#include "server/api_keys.hpp"

#include <fmt/format.h>
#include <sodium.h>

#include <algorithm>
#include <array>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "common/ids.hpp"

namespace cairn::server {
namespace {

constexpr std::string_view kServerV1 = R"sql(
CREATE TABLE api_keys (
    id         TEXT   PRIMARY KEY,
    name       TEXT   NOT NULL,
    scope      TEXT   NOT NULL,
    prefix     TEXT   NOT NULL,
    hash       TEXT   NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
)sql";

// The event names a key may send, as a JSON array; NULL for any.
constexpr std::string_view kServerV2 = R"sql(
ALTER TABLE api_keys ADD COLUMN events TEXT;
)sql";

constexpr storage::Migration kMigrations[] = {{1, "api keys", kServerV1},
                                              {2, "events a key may send", kServerV2}};

constexpr std::string_view kColumns = "id, name, scope, prefix, created_at, revoked_at, events";

std::string hex(const unsigned char* data, std::size_t n) {
    std::string out(n * 2 + 1, '\0');
    sodium_bin2hex(out.data(), out.size(), data, n);
    out.pop_back();
    return out;
}

std::string hash_secret(std::string_view secret) {
    std::array<unsigned char, crypto_generichash_BYTES> digest{};
    crypto_generichash(digest.data(), digest.size(),
                       reinterpret_cast<const unsigned char*>(secret.data()), secret.size(),
                       nullptr, 0);
    return hex(digest.data(), digest.size());
}

ApiKey read_key(const storage::Row& row) {
    return ApiKey{
        row.get<std::string>(0),
        row.get<std::string>(1),
        parse_scope(row.get<std::string>(2)).value_or(KeyScope::events),
        row.get<std::string>(3),
        row.get<std::int64_t>(4),
        row.get_opt<std::int64_t>(5),
        row.is_null(6)
            ? std::vector<std::string>{}
            : nlohmann::json::parse(row.get<std::string>(6)).get<std::vector<std::string>>()};
}

}  // namespace

bool ApiKey::may_send(std::string_view event_name) const {
    if (events.empty()) return true;
    return std::any_of(events.begin(), events.end(), [&](const std::string& p) {
        return p.ends_with('*')
                   ? event_name.starts_with(std::string_view(p).substr(0, p.size() - 1))
                   : event_name == p;
    });
}

std::vector<std::string> parse_event_patterns(std::string_view list) {
    std::vector<std::string> out;
    while (!list.empty()) {
        const auto comma = list.find(',');
        std::string_view entry = list.substr(0, comma);
        list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
        while (!entry.empty() && entry.front() == ' ') entry.remove_prefix(1);
        while (!entry.empty() && entry.back() == ' ') entry.remove_suffix(1);
        if (entry.empty() || entry.size() > 200)
            throw std::invalid_argument("an event name or prefix has 1 to 200 characters");
        if (entry.find('*') < entry.size() - 1)
            throw std::invalid_argument(
                fmt::format("'{}': '*' may only end a prefix, as in ticket/*", entry));
        out.emplace_back(entry);
    }
    return out;
}

std::string_view to_string(KeyScope scope) {
    return scope == KeyScope::admin ? "admin" : "events";
}

std::optional<KeyScope> parse_scope(std::string_view text) {
    if (text == "admin") return KeyScope::admin;
    if (text == "events") return KeyScope::events;
    return std::nullopt;
}

storage::Component api_keys_component() {
    return storage::Component{"server", kMigrations};
}

std::pair<ApiKey, std::string> ApiKeys::create(std::string_view name, KeyScope scope,
                                               std::int64_t now, std::vector<std::string> events) {
    if (name.empty() || name.size() > 200)
        throw std::invalid_argument("a key needs a name of 1 to 200 characters");
    if (sodium_init() < 0) throw std::runtime_error("libsodium failed to initialise");
    std::array<unsigned char, 32> raw{};
    randombytes_buf(raw.data(), raw.size());
    std::string secret = "ck_" + hex(raw.data(), raw.size());
    ApiKey key{new_id_at(now), std::string(name), scope, secret.substr(0, 10), now,
               std::nullopt,   std::move(events)};
    const std::optional<std::string> allowed =
        key.events.empty() ? std::nullopt
                           : std::optional<std::string>(nlohmann::json(key.events).dump());
    db_.exec(
        "INSERT INTO api_keys (id, name, scope, prefix, hash, created_at, events) VALUES ($1, $2, "
        "$3, $4, $5, $6, $7)",
        key.id, key.name, to_string(scope), key.prefix, hash_secret(secret), now, allowed);
    return {key, secret};
}

std::vector<ApiKey> ApiKeys::list() {
    std::vector<ApiKey> out;
    for (auto row : db_.read(fmt::format("SELECT {} FROM api_keys ORDER BY id", kColumns))) {
        out.push_back(read_key(row));
    }
    return out;
}

bool ApiKeys::revoke(std::string_view id, std::int64_t now) {
    return db_.exec("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL", id,
                    now)
               .affected() == 1;
}

std::optional<ApiKey> ApiKeys::verify(std::string_view secret) {
    if (secret.size() != 67 || !secret.starts_with("ck_")) return std::nullopt;
    auto rows = db_.read(
        fmt::format("SELECT {} FROM api_keys WHERE hash = $1 AND revoked_at IS NULL", kColumns),
        hash_secret(secret));
    if (rows.empty()) return std::nullopt;
    return read_key(rows.front());
}

}  // namespace cairn::server
