#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "storage/database.hpp"

namespace cairn::storage {

// One schema change of one component. `sql` is portable SQL (one or more statements)
// that runs unchanged on SQLite and Postgres. Versions start at 1 and never change once
// released: a new change is a new version.
//
// A change that only one backend needs (or can express) sets `only`: the other backend
// records the version as applied without running `sql`, so versions stay the same on both.
struct Migration {
    int version;
    std::string_view name;
    std::string_view sql;
    std::optional<Backend> only = std::nullopt;
};

// A component (the engine, a plugin) and its migrations in version order.
struct Component {
    std::string_view name;
    std::span<const Migration> migrations;
};

struct MigrationState {
    std::string component;
    int version = 0;
    std::string name;
    std::optional<std::int64_t> applied_at;  // epoch ms; nullopt while pending
};

// Applies each component's pending migrations, recording them in `schema_migrations`.
//
// apply() runs everything pending in one transaction: on failure nothing is applied.
// On Postgres it first takes an advisory transaction lock, so processes migrating one
// database at once queue up and the later ones find nothing left to do. Applying twice
// is a no-op.
class Migrator {
  public:
    Migrator(Database& db, std::vector<Component> components);

    // Returns the number of migrations applied.
    int apply();

    // Every known migration, applied or pending, in component then version order.
    std::vector<MigrationState> status();

  private:
    Database& db_;
    std::vector<Component> components_;
};

}  // namespace cairn::storage
