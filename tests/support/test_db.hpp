#pragma once

#include <memory>
#include <string>

#include "storage/database.hpp"

namespace cairn::testing {

// Which backend this test process runs against: CAIRN_TEST_BACKEND=sqlite|postgres
// (default sqlite). Postgres needs CAIRN_TEST_PG_URL, an admin URL of a server where the
// tests may create and drop databases (scripts/test starts a throwaway one).
storage::Backend test_backend();

// For a test binary's main(): returns an exit code when the suite cannot run here —
// 77 (skipped, with the reason on stderr) when Postgres is wanted but not configured
// outside CI, 1 when the same happens in CI (CI=true) — else -1 to go on.
int check_backend_available();

// A fresh, empty database for one test case, dropped again by the destructor: a new
// SQLite file in a temporary directory, or a new database on the Postgres server.
class TestDb {
  public:
    TestDb();
    ~TestDb();
    TestDb(const TestDb&) = delete;
    TestDb& operator=(const TestDb&) = delete;

    storage::Database& db() { return *db_; }
    // The URL of this database, to open more handles on it (other "processes").
    const std::string& url() const { return url_; }
    std::unique_ptr<storage::Database> open_another() const {
        return storage::Database::open(url_);
    }

  private:
    std::string url_;
    std::string cleanup_;  // SQLite: directory to remove; Postgres: database to drop
    std::unique_ptr<storage::Database> db_;
};

}  // namespace cairn::testing
