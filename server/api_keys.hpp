#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "storage/database.hpp"
#include "storage/migrations.hpp"

namespace cairn::server {

// What a key may do. `admin` reaches every engine route; `events` may only send events
// (POST /api/engine/events), for producers that should see nothing else.
enum class KeyScope { admin, events };
std::string_view to_string(KeyScope scope);
std::optional<KeyScope> parse_scope(std::string_view text);

struct ApiKey {
    std::string id;
    std::string name;
    KeyScope scope = KeyScope::admin;
    std::string prefix;  // the first characters of the secret, to recognise it
    std::int64_t created_at = 0;
    std::optional<std::int64_t> revoked_at;
    // The event names the key may send: exact names, or prefixes ending in '*'
    // ("ticket/*"). Empty: any.
    std::vector<std::string> events;

    bool may_send(std::string_view event_name) const;
};

// Parses a comma-separated list of event names and prefixes ("user/signup, ticket/*");
// throws std::invalid_argument for an empty entry or a '*' other than at the end.
std::vector<std::string> parse_event_patterns(std::string_view list);

// The server component's migrations (the api_keys table), for Migrator.
storage::Component api_keys_component();

// API keys, stored as BLAKE2b hashes: a key is 256 random bits, so a fast hash is as safe
// as a slow one, and the secret itself is never stored. Thread-safe.
class ApiKeys {
  public:
    explicit ApiKeys(storage::Database& db) : db_(db) {}

    // Creates a key and returns it with its secret ("ck_" + 64 hex digits), which is
    // shown once and cannot be recovered. Throws std::invalid_argument for an empty name.
    std::pair<ApiKey, std::string> create(std::string_view name, KeyScope scope, std::int64_t now,
                                          std::vector<std::string> events = {});
    std::vector<ApiKey> list();
    // False when no such key exists or it was already revoked.
    bool revoke(std::string_view id, std::int64_t now);
    // The key whose secret this is, unless unknown or revoked.
    std::optional<ApiKey> verify(std::string_view secret);

  private:
    storage::Database& db_;
};

}  // namespace cairn::server
