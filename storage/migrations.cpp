#include "storage/migrations.hpp"

#include <fmt/format.h>

#include <map>
#include <utility>

#include "common/time.hpp"

namespace cairn::storage {
namespace {

constexpr std::string_view kCreateTable = R"sql(
CREATE TABLE IF NOT EXISTS schema_migrations (
    component  TEXT   NOT NULL,
    version    BIGINT NOT NULL,
    name       TEXT   NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (component, version)
))sql";

using Applied = std::map<std::pair<std::string, int>, std::int64_t>;

Applied read_applied(Transaction& tx) {
    Applied out;
    for (auto row : tx.exec("SELECT component, version, applied_at FROM schema_migrations")) {
        out[{row.get<std::string>(0), row.get<int>(1)}] = row.get<std::int64_t>(2);
    }
    return out;
}

}  // namespace

Migrator::Migrator(Database& db, std::vector<Component> components)
    : db_(db), components_(std::move(components)) {
    for (const auto& c : components_) {
        int expected = 1;
        for (const auto& m : c.migrations) {
            if (m.version != expected) {
                throw std::logic_error(
                    fmt::format("component {}: migration {} out of order (expected {})", c.name,
                                m.version, expected));
            }
            ++expected;
        }
    }
}

int Migrator::apply() {
    return db_.transact([&](Transaction& tx) {
        if (!tx.dialect().migration_lock().empty()) tx.exec(tx.dialect().migration_lock());
        tx.exec_script(kCreateTable);
        const Applied applied = read_applied(tx);
        int count = 0;
        for (const auto& c : components_) {
            for (const auto& m : c.migrations) {
                if (applied.contains({std::string(c.name), m.version})) continue;
                try {
                    if (!m.only || *m.only == tx.backend()) tx.exec_script(m.sql);
                } catch (const StorageError& e) {
                    throw StorageError(e.backend(),
                                       fmt::format("migration {} {} ({}) failed: {}", c.name,
                                                   m.version, m.name, e.message()),
                                       e.statement());
                }
                tx.exec(
                    "INSERT INTO schema_migrations (component, version, name, applied_at) "
                    "VALUES ($1, $2, $3, $4)",
                    c.name, m.version, m.name, now_ms());
                ++count;
            }
        }
        return count;
    });
}

std::vector<MigrationState> Migrator::status() {
    Applied applied;
    db_.transact(
        [&](Transaction& tx) {
            // A fresh database has no table yet: everything is pending.
            const std::string_view probe =
                tx.backend() == Backend::sqlite
                    ? "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = "
                      "'schema_migrations'"
                    : "SELECT count(*) FROM information_schema.tables "
                      "WHERE table_schema = current_schema() AND table_name = 'schema_migrations'";
            if (tx.exec(probe).front().get<std::int64_t>(0) > 0) applied = read_applied(tx);
        },
        Access::read_only);

    std::vector<MigrationState> out;
    for (const auto& c : components_) {
        for (const auto& m : c.migrations) {
            MigrationState s{std::string(c.name), m.version, std::string(m.name), std::nullopt};
            if (auto it = applied.find({s.component, m.version}); it != applied.end())
                s.applied_at = it->second;
            out.push_back(std::move(s));
        }
    }
    return out;
}

}  // namespace cairn::storage
