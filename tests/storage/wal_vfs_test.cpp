// The SQLite VFS that writes a commit's WAL frames in one go (storage/sqlite/wal_vfs.hpp).
// Each case reads the files back the way a crash would leave them: copies of the database
// and its WAL taken while the writing connection is still open, opened with SQLite's own
// VFS, which must recover every commit from the WAL's frames and checksums alone.
#include "storage/sqlite/wal_vfs.hpp"

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "support/test_db.hpp"

namespace fs = std::filesystem;
using cairn::storage::Backend;
namespace wal_vfs = cairn::storage::sqlite;

namespace {

// A connection opened raw, through Cairn's VFS (vfs = true) or SQLite's default one.
class Conn {
  public:
    Conn(const fs::path& path, bool vfs) {
        const int rc =
            sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                            vfs ? wal_vfs::wal_vfs_name() : nullptr);
        if (rc != SQLITE_OK) throw std::runtime_error(sqlite3_errstr(rc));
        sqlite3_busy_timeout(db_, 5000);
    }
    ~Conn() { sqlite3_close_v2(db_); }
    Conn(const Conn&) = delete;
    Conn& operator=(const Conn&) = delete;

    // Runs `sql` and returns the first column of the last row it produced, as text.
    std::string exec(const std::string& sql) {
        std::string last;
        char* err = nullptr;
        const int rc = sqlite3_exec(
            db_, sql.c_str(),
            [](void* out, int, char** values, char**) {
                *static_cast<std::string*>(out) = values[0] ? values[0] : "NULL";
                return 0;
            },
            &last, &err);
        if (rc != SQLITE_OK) {
            const std::string msg = err ? err : sqlite3_errstr(rc);
            sqlite3_free(err);
            throw std::runtime_error(fmt::format("{}: {}", sql, msg));
        }
        return last;
    }
    std::int64_t number(const std::string& sql) { return std::stoll(exec(sql)); }

  private:
    sqlite3* db_ = nullptr;
};

struct TempDir {
    fs::path path;
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "cairn-walvfs-XXXXXX").string();
        if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
        path = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

// The writer in WAL mode, as Cairn opens it, with checkpoints off so that every commit
// stays in the WAL file for the copy to recover.
std::unique_ptr<Conn> open_writer(const fs::path& db, std::string_view synchronous = "NORMAL") {
    auto c = std::make_unique<Conn>(db, true);
    CHECK(c->exec("PRAGMA journal_mode=WAL") == "wal");
    c->exec(fmt::format("PRAGMA synchronous={}", synchronous));
    c->exec("PRAGMA wal_autocheckpoint=0");
    c->exec("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, tag TEXT, b BLOB)");
    return c;
}

// What a crash of the writing process would leave: the database and WAL files as the OS
// has them now (no -shm: the copy rebuilds its index from the WAL). Opened with SQLite's
// default VFS; the copy must be intact.
std::unique_ptr<Conn> crash_copy(const TempDir& dir) {
    const fs::path from = dir.path / "x.db";
    const fs::path to = dir.path / "copy";
    fs::create_directories(to);
    for (const char* suffix : {"", "-wal"}) {
        fs::copy_file(from.string() + suffix, (to / "x.db").string() + suffix,
                      fs::copy_options::overwrite_existing);
    }
    auto c = std::make_unique<Conn>(to / "x.db", false);
    CHECK(c->exec("PRAGMA integrity_check") == "ok");
    return c;
}

// A statement inserting `rows` rows tagged `tag`, each with a 3,000-byte blob: a page a row.
std::string insert_blobs(int rows, std::string_view tag) {
    return fmt::format(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {}) "
        "INSERT INTO t (tag, b) SELECT '{}', randomblob(3000) FROM n",
        rows, tag);
}

bool on_sqlite() {
    return cairn::testing::test_backend() == Backend::sqlite;
}

}  // namespace

TEST_CASE("the WAL VFS writes a commit's frames in one write, which other connections read") {
    if (!on_sqlite()) return;  // a SQLite VFS: nothing to run on Postgres
    TempDir dir;
    auto writer = open_writer(dir.path / "x.db");
    const auto before = wal_vfs::wal_vfs_counts();
    // 20 rows of 3,000 bytes: a page each, so at least 20 frames in one commit.
    writer->exec(fmt::format("BEGIN; {}; COMMIT", insert_blobs(20, "one")));
    const auto after = wal_vfs::wal_vfs_counts();
    CHECK(after.frames - before.frames >= 20);
    // 20 frames of 4,120 bytes fit one write (other tests' threads may add a few).
    CHECK(after.writes - before.writes <= 2);

    // Another connection, through SQLite's default VFS, sees the commit at once.
    Conn reader(dir.path / "x.db", false);
    CHECK(reader.number("SELECT count(*) FROM t WHERE tag = 'one'") == 20);
    CHECK(reader.number("SELECT sum(length(b)) FROM t") == 20 * 3000);
    CHECK(crash_copy(dir)->number("SELECT count(*) FROM t") == 20);
}

TEST_CASE("the WAL VFS: what a crash leaves holds every commit, small and large") {
    if (!on_sqlite()) return;
    // FULL syncs the WAL at every commit (docs/storage.md), which the VFS writes out first.
    for (const std::string_view synchronous : {"NORMAL", "FULL"}) {
        CAPTURE(synchronous);
        TempDir dir;
        auto writer = open_writer(dir.path / "x.db", synchronous);
        // Small commits, then one of about 1.5 MB: beyond the buffer's limit and the
        // largest single write, so its frames go out in several writes before and with the
        // commit.
        for (int i = 0; i < 30; ++i)
            writer->exec(fmt::format("INSERT INTO t (tag) VALUES ('s{}')", i));
        writer->exec(fmt::format("BEGIN; {}; COMMIT", insert_blobs(500, "big")));
        writer->exec("UPDATE t SET tag = 'last' WHERE tag = 's0'");
        auto copy = crash_copy(dir);
        CHECK(copy->number("SELECT count(*) FROM t") == 530);
        CHECK(copy->number("SELECT count(*) FROM t WHERE tag = 'big'") == 500);
        CHECK(copy->number("SELECT count(*) FROM t WHERE tag = 'last'") == 1);
        CHECK(writer->number("SELECT count(*) FROM t") == 530);
    }
}

TEST_CASE("the WAL VFS: a large transaction's spilled and rewritten pages, then a rollback") {
    if (!on_sqlite()) return;
    TempDir dir;
    auto writer = open_writer(dir.path / "x.db");
    // A page cache of 10 pages makes SQLite spill a transaction's pages to the WAL before
    // the commit, and write a spilled page again in place when it changes once more.
    writer->exec("PRAGMA cache_size=10");
    writer->exec(
        fmt::format("BEGIN; {}; UPDATE t SET tag = 'changed' WHERE id % 2 = 0; "
                    "UPDATE t SET tag = 'again' WHERE id % 4 = 0; COMMIT",
                    insert_blobs(200, "kept")));
    // Spilled frames that are rolled back: another connection then commits at the same
    // offsets of the WAL, and they must not come back over its frames. With the WAL
    // emptied first, the rollback reads nothing back from it, so they are still unwritten.
    writer->exec("PRAGMA wal_checkpoint(TRUNCATE)");
    writer->exec(fmt::format("BEGIN; {}; ROLLBACK", insert_blobs(200, "rolled back")));
    {
        Conn other(dir.path / "x.db", true);
        other.exec(fmt::format("BEGIN; {}; COMMIT", insert_blobs(40, "other")));
    }
    // The first connection reads and writes again after the other's commit.
    CHECK(writer->number("SELECT count(*) FROM t WHERE tag = 'other'") == 40);
    writer->exec("INSERT INTO t (tag) VALUES ('after')");

    const auto copy = crash_copy(dir);
    for (Conn* c : {writer.get(), copy.get()}) {
        CHECK(c->exec("PRAGMA integrity_check") == "ok");
        CHECK(c->number("SELECT count(*) FROM t") == 241);
        CHECK(c->number("SELECT count(*) FROM t WHERE tag = 'rolled back'") == 0);
        CHECK(c->number("SELECT count(*) FROM t WHERE tag = 'again'") == 50);
        CHECK(c->number("SELECT count(*) FROM t WHERE tag = 'changed'") == 50);
        CHECK(c->number("SELECT count(*) FROM t WHERE tag = 'other'") == 40);
    }
}

TEST_CASE("the WAL VFS: a commit whose frames cannot be written fails, and nothing is lost") {
    if (!on_sqlite()) return;
    TempDir dir;
    auto writer = open_writer(dir.path / "x.db");
    writer->exec("INSERT INTO t (tag) VALUES ('before')");
    const auto wal_size = fs::file_size(dir.path / "x.db-wal");

    // A file size limit for this process 200 KB past the WAL's end: the frames of a 400 KB
    // commit, written out with its commit frame, cannot all be written, as on a full disk. (Past
    // the limit a write fails with EFBIG, once SIGXFSZ, which would end the process, is ignored.)
    rlimit old_limit{};
    REQUIRE(getrlimit(RLIMIT_FSIZE, &old_limit) == 0);
    const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit limit = old_limit;
    limit.rlim_cur = static_cast<rlim_t>(wal_size + 200 * 1024);
    REQUIRE(setrlimit(RLIMIT_FSIZE, &limit) == 0);
    std::string error;
    try {
        writer->exec(fmt::format("BEGIN; {}; COMMIT", insert_blobs(100, "too big")));
    } catch (const std::exception& e) {
        error = e.what();
    }
    setrlimit(RLIMIT_FSIZE, &old_limit);
    std::signal(SIGXFSZ, old_handler);
    CAPTURE(error);
    CHECK(!error.empty());
    try {
        writer->exec("ROLLBACK");  // if SQLite has not rolled it back itself
    } catch (const std::exception&) {
    }

    // The failed transaction left nothing; the database takes the next commit.
    writer->exec("INSERT INTO t (tag) VALUES ('after')");
    const auto copy = crash_copy(dir);
    for (Conn* c : {writer.get(), copy.get()}) {
        CHECK(c->exec("PRAGMA integrity_check") == "ok");
        CHECK(c->number("SELECT count(*) FROM t WHERE tag = 'too big'") == 0);
        CHECK(c->number("SELECT count(*) FROM t") == 2);
    }
}

TEST_CASE("the WAL VFS: connections writing side by side, with rollbacks, spills and restarts") {
    if (!on_sqlite()) return;
    TempDir dir;
    // The table, in WAL mode, and a connection kept open so that the WAL file stays.
    const auto keeper = open_writer(dir.path / "x.db");
    // Three connections commit and roll back transactions of 1 to 60 pages at once; small
    // page caches make the larger ones spill, and SQLite's own checkpoints (every 100
    // pages) start the WAL over now and then, so writers meet at every offset of it.
    constexpr int kThreads = 3, kRounds = 60;
    std::vector<std::thread> threads;
    std::vector<std::string> errors(kThreads);
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            try {
                Conn c(dir.path / "x.db", true);
                c.exec("PRAGMA cache_size=8");
                c.exec("PRAGMA wal_autocheckpoint=100");
                for (int r = 0; r < kRounds; ++r) {
                    const int rows = 1 + (r * 7 + t * 13) % 60;
                    const bool keep = r % 3 != 2;
                    c.exec(fmt::format(
                        "BEGIN IMMEDIATE; {}; {}",
                        insert_blobs(rows, keep ? fmt::format("t{}", t) : std::string("gone")),
                        keep ? "COMMIT" : "ROLLBACK"));
                }
            } catch (const std::exception& e) {
                errors[t] = e.what();
            }
        });
    }
    for (auto& th : threads) th.join();
    std::int64_t expected = 0;
    for (int t = 0; t < kThreads; ++t) {
        CHECK(errors[t] == "");
        for (int r = 0; r < kRounds; ++r)
            if (r % 3 != 2) expected += 1 + (r * 7 + t * 13) % 60;
    }
    const auto copy = crash_copy(dir);
    Conn fresh(dir.path / "x.db", false);
    for (Conn* c : {&fresh, copy.get()}) {
        CHECK(c->exec("PRAGMA integrity_check") == "ok");
        CHECK(c->number("SELECT count(*) FROM t") == expected);
        CHECK(c->number("SELECT count(*) FROM t WHERE tag = 'gone'") == 0);
    }
}
