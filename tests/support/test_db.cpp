#include "support/test_db.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <pqxx/pqxx>

#include "common/ids.hpp"

namespace cairn::testing {
namespace {

std::string env(const char* name) {
    const char* v = std::getenv(name);
    return v ? v : "";
}

std::string admin_url() {
    return env("CAIRN_TEST_PG_URL");
}

// Replaces the database name (the path after host:port) of a postgres:// URL.
std::string with_database(const std::string& url, const std::string& name) {
    const auto scheme_end = url.find("://") + 3;
    const auto slash = url.find('/', scheme_end);
    const auto query = url.find('?', scheme_end);
    std::string base = url.substr(0, slash == std::string::npos ? query : slash);
    std::string tail = query == std::string::npos ? "" : url.substr(query);
    return base + "/" + name + tail;
}

}  // namespace

storage::Backend test_backend() {
    const std::string b = env("CAIRN_TEST_BACKEND");
    if (b.empty() || b == "sqlite") return storage::Backend::sqlite;
    if (b == "postgres") return storage::Backend::postgres;
    std::cerr << "CAIRN_TEST_BACKEND must be sqlite or postgres, not '" << b << "'\n";
    std::exit(2);
}

int check_backend_available() {
    if (test_backend() != storage::Backend::postgres || !admin_url().empty()) return -1;
    if (!env("CI").empty()) {
        std::cerr
            << "FAIL: CI is set but CAIRN_TEST_PG_URL is not: the Postgres suite must run in CI "
               "(scripts/test starts a throwaway cluster)\n";
        return 1;
    }
    std::cerr << "SKIP: CAIRN_TEST_PG_URL is not set, so the Postgres suite cannot run here; "
                 "scripts/test starts a throwaway cluster and sets it\n";
    return 77;
}

TestDb::TestDb() {
    std::string id = new_id();
    id.erase(std::remove(id.begin(), id.end(), '-'), id.end());
    if (test_backend() == storage::Backend::sqlite) {
        auto dir = std::filesystem::temp_directory_path() / fmt::format("cairn-test-{}", id);
        std::filesystem::create_directories(dir);
        cleanup_ = dir.string();
        url_ = fmt::format("sqlite://{}/test.db", cleanup_);
    } else {
        cleanup_ = fmt::format("cairn_test_{}", id);
        pqxx::connection admin(admin_url());
        pqxx::nontransaction(admin).exec(fmt::format("CREATE DATABASE {}", cleanup_));
        url_ = with_database(admin_url(), cleanup_);
    }
    db_ = storage::Database::open(url_);
}

TestDb::~TestDb() {
    db_.reset();
    try {
        if (test_backend() == storage::Backend::sqlite) {
            std::filesystem::remove_all(cleanup_);
        } else {
            pqxx::connection admin(admin_url());
            pqxx::nontransaction(admin).exec(
                fmt::format("DROP DATABASE IF EXISTS {} WITH (FORCE)", cleanup_));
        }
    } catch (const std::exception& e) {
        std::cerr << "warning: could not drop test database " << cleanup_ << ": " << e.what()
                  << '\n';
    }
}

}  // namespace cairn::testing
