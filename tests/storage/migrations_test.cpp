#include "storage/migrations.hpp"

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <atomic>
#include <set>
#include <string>
#include <thread>

#include "storage/run_store.hpp"
#include "support/test_db.hpp"

using namespace cairn::storage;
using cairn::testing::TestDb;

namespace {

constexpr Migration kWidgets[] = {
    {1, "widgets table", "CREATE TABLE widgets (id BIGINT PRIMARY KEY, name TEXT NOT NULL)"},
    {2, "widget colour",
     "ALTER TABLE widgets ADD COLUMN colour TEXT; CREATE INDEX widgets_colour ON widgets (colour)"},
};
constexpr Migration kBroken[] = {
    {1, "fine", "CREATE TABLE fine (id BIGINT PRIMARY KEY)"},
    {2, "broken", "CREATE TABLE broken (id BIGINT PRIMARY KEY"},
};

// Every migration of the engine and the widgets component.
int all_migrations() {
    return static_cast<int>(run_store_component().migrations.size() + std::size(kWidgets));
}

}  // namespace

TEST_CASE("migrate applies pending migrations once and records them") {
    TestDb t;
    Migrator m(t.db(), {run_store_component(), Component{"widgets", kWidgets}});

    auto before = m.status();
    REQUIRE(before.size() == static_cast<std::size_t>(all_migrations()));
    for (const auto& s : before) CHECK_FALSE(s.applied_at.has_value());

    CHECK(m.apply() == all_migrations());
    CHECK(m.apply() == 0);  // applying twice is a no-op
    for (const auto& s : m.status()) CHECK(s.applied_at.has_value());

    t.db().exec("INSERT INTO widgets (id, name, colour) VALUES ($1, $2, $3)", 1, "gear", "red");
    CHECK(t.db().exec("SELECT count(*) FROM schema_migrations").front().get<int>(0) ==
          all_migrations());
}

TEST_CASE("a later migration of a component is applied on the next run") {
    TestDb t;
    Migrator first(t.db(), {Component{"widgets", std::span(kWidgets).first(1)}});
    CHECK(first.apply() == 1);
    Migrator second(t.db(), {Component{"widgets", kWidgets}});
    auto status = second.status();
    CHECK(status[0].applied_at.has_value());
    CHECK_FALSE(status[1].applied_at.has_value());
    CHECK(second.apply() == 1);
}

TEST_CASE("a failing migration applies nothing and names itself") {
    TestDb t;
    Migrator m(t.db(), {Component{"broken", kBroken}});
    try {
        m.apply();
        FAIL("expected StorageError");
    } catch (const StorageError& e) {
        CHECK(std::string(e.what()).find("migration broken 2 (broken)") != std::string::npos);
    }
    for (const auto& s : m.status()) CHECK_FALSE(s.applied_at.has_value());
    CHECK_THROWS_AS(t.db().exec("SELECT count(*) FROM fine"), StorageError);
}

TEST_CASE("a migration for one backend runs there only and is recorded on both") {
    TestDb t;
    const Backend here = t.db().backend();
    const Backend other = here == Backend::sqlite ? Backend::postgres : Backend::sqlite;
    const Migration kSplit[] = {
        {1, "here", "CREATE TABLE here_only (id BIGINT PRIMARY KEY)", here},
        {2, "elsewhere", "this is not SQL on any backend", other},
    };
    Migrator m(t.db(), {Component{"split", kSplit}});
    CHECK(m.apply() == 2);
    for (const auto& s : m.status()) CHECK(s.applied_at.has_value());
    CHECK(t.db().exec("SELECT count(*) FROM here_only").front().get<int>(0) == 0);
    CHECK(m.apply() == 0);
}

namespace {

// Which of the engine's tables have a foreign key to runs.
std::set<std::string> tables_referencing_runs(Database& db) {
    std::set<std::string> out;
    for (const char* table : {"steps", "step_attempts", "queue", "waits"}) {
        const auto rows =
            db.backend() == Backend::sqlite
                ? db.exec(fmt::format("SELECT count(*) FROM pragma_foreign_key_list('{}') "
                                      "WHERE \"table\" = 'runs'",
                                      table))
                : db.exec(
                      "SELECT count(*) FROM information_schema.table_constraints c "
                      "JOIN information_schema.constraint_column_usage u "
                      "ON u.constraint_name = c.constraint_name "
                      "WHERE c.table_schema = current_schema() AND c.table_name = $1 "
                      "AND c.constraint_type = 'FOREIGN KEY' AND u.table_name = 'runs'",
                      table);
        if (rows.front().get<int>(0) > 0) out.insert(table);
    }
    return out;
}

}  // namespace

TEST_CASE("steps and attempts keep a foreign key to runs on SQLite only") {
    TestDb t;
    Migrator(t.db(), {run_store_component()}).apply();
    if (t.db().backend() == Backend::sqlite) {
        CHECK(tables_referencing_runs(t.db()) ==
              std::set<std::string>{"queue", "step_attempts", "steps", "waits"});
    } else {
        // Engine migration 3: the fence on the queue item guards them (docs/storage.md).
        CHECK(tables_referencing_runs(t.db()) == std::set<std::string>{"queue", "waits"});
    }
}

TEST_CASE("migrations out of order are a programming error") {
    TestDb t;
    constexpr Migration kGap[] = {{1, "a", "SELECT 1"}, {3, "c", "SELECT 1"}};
    CHECK_THROWS_AS(Migrator(t.db(), {Component{"gap", kGap}}), std::logic_error);
}

TEST_CASE("processes migrating one database at once do not collide") {
    TestDb t;
    constexpr int kProcesses = 4;
    std::atomic<int> applied{0};
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int i = 0; i < kProcesses; ++i) {
        threads.emplace_back([&] {
            try {
                auto db = t.open_another();  // a separate pool, as another process would have
                Migrator m(*db, {run_store_component(), Component{"widgets", kWidgets}});
                applied += m.apply();
            } catch (const std::exception& e) {
                ++failures;
                MESSAGE(e.what());
            }
        });
    }
    for (auto& th : threads) th.join();
    CHECK(failures == 0);
    CHECK(applied == all_migrations());
    CHECK(t.db().exec("SELECT count(*) FROM schema_migrations").front().get<int>(0) ==
          all_migrations());
}
