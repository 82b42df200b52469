// Database conformance: the same cases on SQLite and Postgres (CAIRN_TEST_BACKEND).
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <future>
#include <limits>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "storage/detail/connection.hpp"
#include "storage/detail/params.hpp"
#include "storage/postgres/statistics.hpp"
#include "support/test_db.hpp"

using namespace cairn::storage;
using cairn::testing::TestDb;

namespace {

constexpr std::string_view kTable =
    "CREATE TABLE t (id BIGINT PRIMARY KEY, i BIGINT, d DOUBLE PRECISION, s TEXT, b BOOLEAN)";

void make_table(Database& db) {
    db.transact([](Transaction& tx) { tx.exec_script(kTable); });
}

std::int64_t count(Database& db, std::string_view table = "t") {
    return db.exec(fmt::format("SELECT count(*) FROM {}", table)).front().get<std::int64_t>(0);
}

// SQLite group commit: a write transaction (row 1, 'first') that holds the one writer from
// construction until release(), so others queue up behind it.
class WriterHeld {
  public:
    explicit WriterHeld(Database& db)
        : thread_([this, &db] {
              db.transact([this](Transaction& tx) {
                  tx.exec("INSERT INTO t (id, s) VALUES (1, 'first')");
                  entered_.set_value();
                  released_.wait();
              });
          }) {
        entered_.get_future().wait();
    }
    ~WriterHeld() { release(); }
    WriterHeld(const WriterHeld&) = delete;
    WriterHeld& operator=(const WriterHeld&) = delete;

    // Lets the held transaction commit and waits for it.
    void release() {
        if (!thread_.joinable()) return;
        release_.set_value();
        thread_.join();
    }

  private:
    std::promise<void> release_;
    std::shared_future<void> released_ = release_.get_future().share();
    std::promise<void> entered_;
    std::thread thread_;  // last: started once the promises exist
};

// Waits (up to 20 s) until `n` write transactions wait for a batch; returns how many do.
std::size_t wait_for_waiting(Database& db, std::size_t n) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (db.writes().stats().waiting < n && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return db.writes().stats().waiting;
}

}  // namespace

TEST_CASE("every column type round-trips") {
    TestDb t;
    Database& db = t.db();
    make_table(db);
    const std::int64_t big = std::numeric_limits<std::int64_t>::max();
    const std::int64_t small = std::numeric_limits<std::int64_t>::min();
    const std::string text = "quotes ' \" \\ ; -- and unicode: żółw 🐢 ✓\nnew line\ttab";
    db.exec("INSERT INTO t (id, i, d, s, b) VALUES ($1, $2, $3, $4, $5)", 1, big, 3.141592653589793,
            text, true);
    db.exec("INSERT INTO t (id, i, d, s, b) VALUES ($1, $2, $3, $4, $5)", 2, small, -1.5e-300, "",
            false);
    db.exec("INSERT INTO t (id, i, d, s, b) VALUES ($1, $2, $3, $4, $5)", 3, nullptr, std::nullopt,
            std::optional<std::string>{}, std::optional<bool>{});
    db.exec("INSERT INTO t (id, i, d, s, b) VALUES ($1, $2, $3, $4, $5)", 4, 0,
            1.7976931348623157e308, std::string_view("view"), true);

    auto rows = db.exec("SELECT id, i, d, s, b FROM t ORDER BY id");
    REQUIRE(rows.size() == 4);
    CHECK(rows.columns() == std::vector<std::string>{"id", "i", "d", "s", "b"});
    CHECK(rows[0].get<std::int64_t>("i") == big);
    CHECK(rows[0].get<double>("d") == 3.141592653589793);
    CHECK(rows[0].get<std::string>("s") == text);
    CHECK(rows[0].get<bool>("b") == true);
    CHECK(rows[1].get<std::int64_t>(1) == small);
    CHECK(rows[1].get<double>(2) == -1.5e-300);
    CHECK(rows[1].get<std::string>(3).empty());
    CHECK(rows[1].get<bool>(4) == false);
    for (std::size_t c = 1; c < 5; ++c) CHECK(rows[2].is_null(c));
    CHECK_FALSE(rows[2].get_opt<std::int64_t>("i").has_value());
    CHECK_FALSE(rows[2].get_opt<std::string>("s").has_value());
    CHECK(rows[3].get<double>("d") == 1.7976931348623157e308);
    CHECK(rows[3].get<int>("id") == 4);

    // A NULL or a cell of the wrong kind is an error, never a silent zero.
    CHECK_THROWS_AS(rows[2].get<std::int64_t>("i"), StorageError);
    CHECK_THROWS_AS(rows[0].get<std::int64_t>("s"), StorageError);
    CHECK_THROWS_AS(rows[0].get<std::string>("missing"), StorageError);
    CHECK_THROWS_AS(rows[0].get<int>("i"), StorageError);  // does not fit 32 bits
}

TEST_CASE("large JSON text round-trips byte for byte") {
    TestDb t;
    Database& db = t.db();
    make_table(db);
    std::string json = "{\"items\":[";
    for (int i = 0; i < 20000; ++i) {
        if (i) json += ',';
        json += fmt::format(
            R"({{"n":{},"name":"item \"{}\" — ünïcode","tags":["a","b"],"ok":true}})", i, i);
    }
    json += "]}";
    REQUIRE(json.size() > 1'000'000);
    db.exec("INSERT INTO t (id, s) VALUES ($1, $2)", 1, json);
    CHECK(db.exec("SELECT s FROM t WHERE id = $1", 1).front().get<std::string>(0) == json);
}

TEST_CASE("an exception inside a transaction rolls it back") {
    TestDb t;
    Database& db = t.db();
    make_table(db);
    CHECK_THROWS_AS(db.transact([](Transaction& tx) {
        tx.exec("INSERT INTO t (id) VALUES ($1)", 1);
        throw std::runtime_error("boom");
    }),
                    std::runtime_error);
    CHECK(count(db) == 0);

    {
        Transaction tx = db.begin();
        tx.exec("INSERT INTO t (id) VALUES ($1)", 2);
        // destroyed without commit
    }
    CHECK(count(db) == 0);

    Transaction tx = db.begin();
    tx.exec("INSERT INTO t (id) VALUES ($1)", 3);
    tx.rollback();
    CHECK(count(db) == 0);

    db.transact([](Transaction& w) { w.exec("INSERT INTO t (id) VALUES ($1)", 4); });
    CHECK(count(db) == 1);
}

TEST_CASE("a unique violation is a typed error and leaves the data intact") {
    TestDb t;
    Database& db = t.db();
    make_table(db);
    db.exec("INSERT INTO t (id, s) VALUES ($1, $2)", 1, "first");

    Transaction tx = db.begin();
    tx.exec("INSERT INTO t (id, s) VALUES ($1, $2)", 2, "in the same transaction");
    CHECK_THROWS_AS(tx.exec("INSERT INTO t (id, s) VALUES ($1, $2)", 1, "second"), UniqueViolation);
    // Spent on both backends: nothing more runs, nothing commits.
    CHECK_THROWS_AS(tx.exec("SELECT 1"), StorageError);
    CHECK_THROWS_AS(tx.commit(), StorageError);
    tx.rollback();

    auto rows = db.exec("SELECT id, s FROM t ORDER BY id");
    REQUIRE(rows.size() == 1);
    CHECK(rows[0].get<std::string>("s") == "first");
}

TEST_CASE("constraint violations other than unique are ConstraintViolation") {
    TestDb t;
    Database& db = t.db();
    db.transact([](Transaction& tx) {
        tx.exec_script(
            "CREATE TABLE parent (id BIGINT PRIMARY KEY);"
            "CREATE TABLE child (id BIGINT PRIMARY KEY, parent_id BIGINT NOT NULL REFERENCES "
            "parent (id))");
    });
    CHECK_THROWS_AS(db.exec("INSERT INTO child (id, parent_id) VALUES ($1, $2)", 1, 99),
                    ConstraintViolation);
    CHECK_THROWS_AS(db.exec("INSERT INTO child (id, parent_id) VALUES ($1, $2)", 1, nullptr),
                    ConstraintViolation);
    CHECK(count(db, "child") == 0);
}

TEST_CASE("errors name the backend and the failing statement") {
    TestDb t;
    Database& db = t.db();
    try {
        db.exec("SELEKT nonsense FROM nowhere");
        FAIL("expected StorageError");
    } catch (const StorageError& e) {
        const std::string what = e.what();
        CHECK(what.find(std::string(to_string(db.backend()))) == 0);
        CHECK(what.find("SELEKT nonsense FROM nowhere") != std::string::npos);
        CHECK(e.statement() == "SELEKT nonsense FROM nowhere");
    }
}

TEST_CASE("the parameter count must match the placeholders on both backends") {
    TestDb t;
    Database& db = t.db();
    make_table(db);
    CHECK_THROWS_AS(db.exec("INSERT INTO t (id, i) VALUES ($1, $2)", 1), StorageError);
    CHECK_THROWS_AS(db.exec("INSERT INTO t (id) VALUES ($1)", 1, 2), StorageError);
    // A placeholder used twice binds one parameter.
    db.exec("INSERT INTO t (id, i) VALUES ($1, $1)", 7);
    CHECK(db.exec("SELECT i FROM t WHERE id = $1", 7).front().get<std::int64_t>(0) == 7);
}

TEST_CASE("placeholders in quotes and comments are text; other parameter forms are refused") {
    TestDb t;
    Database& db = t.db();
    make_table(db);
    auto r =
        db.exec("SELECT 'a $1 ? :b @c ''$2''' AS s, \"s\" FROM t /* $3 */ -- $4\nWHERE id = $1", 0);
    CHECK(r.empty());
    // A dollar sign inside an identifier is part of its name, not a placeholder.
    CHECK(db.exec("SELECT 2 AS a$1").columns().front() == "a$1");
    db.exec("INSERT INTO t (id, s) VALUES ($1, 'x $2 ''$3''')", 1);
    CHECK(db.exec("SELECT s FROM t WHERE id = $1", 1).front().get<std::string>(0) == "x $2 '$3'");

    // A statement with hundreds of placeholders (as a batch has), one of them repeated, binds
    // each value at its own number.
    std::string values;
    detail::Params p;
    for (int i = 0; i < 200; ++i) {
        const std::string id = p(i + 10);
        const std::string n = i == 199 ? "$5" : p(i);  // $5 is the second row's i: 1
        values += fmt::format("{}({}, {}, {})", i ? ", " : "", id, n, p(fmt::format("r{}", i)));
    }
    db.exec_once(Access::read_write, fmt::format("INSERT INTO t (id, i, s) VALUES {}", values),
                 p.values);
    CHECK(count(db) == 201);
    CHECK(db.exec("SELECT sum(i) FROM t WHERE id >= 10").front().get<std::int64_t>(0) ==
          19900 - 199 + 1);
    CHECK(db.exec("SELECT s FROM t WHERE id = 209").front().get<std::string>(0) == "r199");
    CHECK(db.exec("SELECT i, s FROM t WHERE id = 11").front().get<std::int64_t>(0) == 1);
    CHECK(db.exec("SELECT i, s FROM t WHERE id = 11").front().get<std::string>(1) == "r1");

    for (const char* sql : {"SELECT id FROM t WHERE id = ?", "SELECT id FROM t WHERE id = ?1",
                            "SELECT id FROM t WHERE id = :id", "SELECT id FROM t WHERE id = @id",
                            "SELECT id FROM t WHERE id = $id", "SELECT id FROM t WHERE id = $0"}) {
        CAPTURE(sql);
        CHECK_THROWS_AS(db.exec(sql, 1), StorageError);
    }
    CHECK(count(db) == 201);
}

TEST_CASE("exec runs one statement; exec_script runs several") {
    TestDb t;
    Database& db = t.db();
    make_table(db);
    CHECK_THROWS_AS(db.exec("INSERT INTO t (id) VALUES (1); DELETE FROM t"), StorageError);
    CHECK(count(db) == 0);
    db.transact([](Transaction& tx) {
        tx.exec_script("INSERT INTO t (id) VALUES (1); INSERT INTO t (id) VALUES (2);");
    });
    CHECK(count(db) == 2);
}

TEST_CASE("a read-only transaction refuses writes") {
    TestDb t;
    Database& db = t.db();
    make_table(db);
    Transaction tx = db.begin(Access::read_only);
    CHECK(tx.exec("SELECT count(*) FROM t").front().get<std::int64_t>(0) == 0);
    CHECK_THROWS_AS(tx.exec("INSERT INTO t (id) VALUES ($1)", 1), StorageError);
    tx.rollback();
    CHECK(count(db) == 0);
}

TEST_CASE("affected() counts changed rows") {
    TestDb t;
    Database& db = t.db();
    make_table(db);
    for (int i = 0; i < 5; ++i) db.exec("INSERT INTO t (id, i) VALUES ($1, $2)", i, i % 2);
    CHECK(db.exec("UPDATE t SET s = $1 WHERE i = $2", "odd", 1).affected() == 2);
    CHECK(db.exec("DELETE FROM t WHERE i = $1", 0).affected() == 3);
    CHECK(db.exec("UPDATE t SET s = $1 WHERE id = $2", "x", 99).affected() == 0);
}

TEST_CASE("many threads share the pool without losing writes") {
    TestDb t;
    Database& db = t.db();
    make_table(db);
    constexpr int kThreads = 8;
    constexpr int kEach = 40;
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int w = 0; w < kThreads; ++w) {
        threads.emplace_back([&, w] {
            for (int i = 0; i < kEach; ++i) {
                try {
                    db.exec("INSERT INTO t (id, i) VALUES ($1, $2)", w * 1000 + i, w);
                    (void)db.transact(
                        [](Transaction& tx) { return tx.exec("SELECT count(*) FROM t"); },
                        Access::read_only);
                } catch (const std::exception& e) {
                    ++failures;
                    MESSAGE(e.what());
                }
            }
        });
    }
    for (auto& th : threads) th.join();
    CHECK(failures == 0);
    CHECK(count(db) == kThreads * kEach);
}

TEST_CASE("a committed write is visible to another handle on the same database") {
    TestDb t;
    make_table(t.db());
    t.db().exec("INSERT INTO t (id, s) VALUES ($1, $2)", 1, "durable");
    auto other = t.open_another();
    CHECK(other->exec("SELECT s FROM t WHERE id = $1", 1).front().get<std::string>(0) == "durable");
}

TEST_CASE("a row stays readable after its result is gone") {
    TestDb t;
    auto row = t.db().read("SELECT 42 AS answer, 'text' AS word").front();
    CHECK(row.get<int>("answer") == 42);
    CHECK(row.get<std::string>("word") == "text");
}

TEST_CASE("concurrent write transactions each get their own result or error") {
    TestDb t;
    Database& db = t.db();
    make_table(db);
    db.exec("INSERT INTO t (id, s) VALUES ($1, $2)", 7, "taken");
    constexpr int kThreads = 12;
    constexpr int kEach = 25;
    std::atomic<int> wrong{0};
    std::vector<std::thread> threads;
    for (int w = 0; w < kThreads; ++w) {
        threads.emplace_back([&, w] {
            for (int i = 0; i < kEach; ++i) {
                const int id = 1000 + w * kEach + i;
                const int kind = (w + i) % 4;  // 0, 1: commit; 2: throw; 3: unique violation
                try {
                    const auto got = db.transact([&](Transaction& tx) {
                        tx.exec("INSERT INTO t (id, i) VALUES ($1, $2)", id, kind);
                        if (kind == 2) throw std::runtime_error("changed my mind");
                        if (kind == 3) tx.exec("INSERT INTO t (id) VALUES ($1)", 7);
                        return tx.exec("SELECT i FROM t WHERE id = $1", id).front().get<int>(0);
                    });
                    if (kind >= 2 || got != kind) ++wrong;
                } catch (const UniqueViolation&) {
                    if (kind != 3) ++wrong;
                } catch (const std::runtime_error& e) {
                    if (kind != 2 || std::string_view(e.what()) != "changed my mind") ++wrong;
                }
            }
        });
    }
    for (auto& th : threads) th.join();
    CHECK(wrong == 0);
    // Exactly the transactions that returned normally committed, and nothing else.
    CHECK(count(db) == 1 + kThreads * kEach / 2);
    CHECK(db.read("SELECT count(*) FROM t WHERE i >= 2").front().get<int>(0) == 0);
    const auto stats = db.writes().stats();
    if (db.backend() == Backend::sqlite) {
        CHECK(stats.writes >= kThreads * kEach);
        CHECK(stats.batches <= stats.writes);
        CHECK(stats.waiting == 0);
    } else {
        CHECK(stats.writes == 0);  // Postgres runs them side by side, each on its own
    }
}

TEST_CASE("on SQLite, write transactions waiting behind a running one share one commit") {
    TestDb t;
    Database& db = t.db();
    if (db.backend() != Backend::sqlite) return;  // Postgres runs writers side by side
    make_table(db);
    const auto before = db.writes().stats();
    WriterHeld first(db);  // the first holds the writer now
    // Two more arrive while the first holds the writer: one commits, one throws.
    std::thread second([&] { db.exec("INSERT INTO t (id, s) VALUES (2, 'second')"); });
    std::string third_error;
    std::thread third([&] {
        try {
            db.transact([](Transaction& tx) {
                tx.exec("INSERT INTO t (id, s) VALUES (3, 'third')");
                tx.exec("INSERT INTO t (id, s) VALUES (3, 'again')");
            });
        } catch (const UniqueViolation& e) {
            third_error = e.what();
        }
    });
    CHECK(wait_for_waiting(db, 2) == 2);
    first.release();
    second.join();
    third.join();
    const auto after = db.writes().stats();
    CHECK(after.writes - before.writes == 3);
    CHECK(after.batches - before.batches == 2);  // the first alone, then the other two
    CHECK_FALSE(third_error.empty());
    // The failed transaction left nothing; its batch companion committed.
    auto rows = db.read("SELECT id, s FROM t ORDER BY id");
    REQUIRE(rows.size() == 2);
    CHECK(rows[0].get<std::string>(1) == "first");
    CHECK(rows[1].get<std::string>(1) == "second");
}

TEST_CASE(
    "on SQLite, when a batch's shared transaction is lost, no caller in it is told it committed") {
    TestDb t;
    Database& db = t.db();
    if (db.backend() != Backend::sqlite) return;
    make_table(db);
    WriterHeld first(db);
    // Three transactions queue behind the first, in this order. The middle one ends the
    // shared transaction (as SQLite itself does after a full disk or an I/O error).
    constexpr int kQueued = 3;
    std::array<bool, kQueued> failed{};
    std::vector<std::thread> queued;
    for (int k = 0; k < kQueued; ++k) {
        queued.emplace_back([&, k] {
            try {
                db.transact([&](Transaction& tx) {
                    tx.exec("INSERT INTO t (id) VALUES ($1)", 10 + k);
                    if (k == 1) tx.exec("ROLLBACK");
                });
            } catch (const StorageError&) {
                failed[static_cast<std::size_t>(k)] = true;
            }
        });
        const auto n = static_cast<std::size_t>(k + 1);
        REQUIRE(wait_for_waiting(db, n) == n);
    }
    first.release();
    for (auto& th : queued) th.join();
    // Every caller's outcome matches the data: the batch was lost and written again a
    // transaction at a time, so the one that ends its transaction fails and leaves no row,
    // and the two beside it commit.
    for (int k = 0; k < kQueued; ++k) {
        const bool present =
            db.read("SELECT count(*) FROM t WHERE id = $1", 10 + k).front().get<int>(0) == 1;
        CHECK(failed[static_cast<std::size_t>(k)] == !present);
        CHECK(present == (k != 1));
    }
    CHECK(count(db) == 3);
    // The writer is usable again.
    db.exec("INSERT INTO t (id) VALUES (2)");
    CHECK(count(db) == 4);
}

TEST_CASE("on SQLite, a batch's transaction that rewrote thousands of rows rolls back alone") {
    TestDb t;
    Database& db = t.db();
    if (db.backend() != Backend::sqlite) return;
    make_table(db);
    // About 4 MiB of rows, all rewritten in the failing transaction: its savepoint's journal
    // holds a thousand pages. (A statement journal limited in size, SQLite's default, would
    // go to a file here; one limited beyond 128 KiB failed this case as a full disk.)
    const std::string before(1000, 'a');
    db.transact([&](Transaction& tx) {
        for (int id = 100; id < 4100; ++id) {
            tx.exec("INSERT INTO t (id, s) VALUES ($1, $2)", id, before);
        }
    });
    WriterHeld first(db);
    std::thread small([&] { db.exec("INSERT INTO t (id, s) VALUES (2, 'second')"); });
    REQUIRE(wait_for_waiting(db, 1) == 1);
    std::string big_error;
    std::thread big([&] {
        try {
            db.transact([&](Transaction& tx) {
                tx.exec("UPDATE t SET s = $1 WHERE id >= 100", std::string(1000, 'b'));
                tx.exec("DELETE FROM t WHERE id >= 100 AND id < 2000");
                throw std::runtime_error("undo all of it");
            });
        } catch (const std::runtime_error& e) {
            big_error = e.what();
        }
    });
    REQUIRE(wait_for_waiting(db, 2) == 2);
    std::thread last([&] { db.exec("INSERT INTO t (id, s) VALUES (3, 'third')"); });
    REQUIRE(wait_for_waiting(db, 3) == 3);
    const auto batches = db.writes().stats().batches;
    first.release();
    small.join();
    big.join();
    last.join();
    CHECK(big_error == "undo all of it");
    CHECK(db.writes().stats().batches - batches == 2);  // the first, then the three
    // The failed transaction's rewrite is undone to the byte; its companions committed.
    CHECK(count(db) == 4000 + 3);
    CHECK(
        db.read("SELECT count(*) FROM t WHERE id >= 100 AND s = $1", before).front().get<int>(0) ==
        4000);
    CHECK(db.read("SELECT s FROM t WHERE id = 2").front().get<std::string>(0) == "second");
    CHECK(db.read("SELECT s FROM t WHERE id = 3").front().get<std::string>(0) == "third");
}

TEST_CASE("on Postgres, each connection plans with the URL's random_page_cost (default 1.1)") {
    TestDb t;
    Database& db = t.db();
    if (db.backend() != Backend::postgres) return;
    const auto setting = [](Database& d) {
        return d.exec("SELECT current_setting('random_page_cost')").front().get<std::string>(0);
    };
    CHECK(setting(db) == "1.1");
    auto other = Database::open(t.url() + (t.url().find('?') == std::string::npos ? "?" : "&") +
                                "random_page_cost=4");
    CHECK(setting(*other) == "4");
    // Every connection of the pool, not only the first.
    std::vector<std::thread> threads;
    std::atomic<int> right{0};
    for (int i = 0; i < 4; ++i) {
        threads.emplace_back([&] {
            other->transact([&](Transaction& tx) {
                right += tx.exec("SELECT current_setting('random_page_cost')")
                             .front()
                             .get<std::string>(0) == "4";
                tx.exec("SELECT pg_sleep(0.05)");
            });
        });
    }
    for (auto& th : threads) th.join();
    CHECK(right == 4);
}

TEST_CASE("on SQLite, the WAL is checkpointed into the database file and stays bounded") {
    TestDb t;
    Database& db = t.db();
    if (db.backend() != Backend::sqlite) return;
    make_table(db);
    const std::string path = parse_database_url(t.url()).path;
    // 150 MB in 1,500 commits, one after another: without checkpoints the WAL would hold
    // all of it; a checkpoint (background past 10,000 pages of 4 KiB or, when behind, the
    // writer's at 20,000) keeps it under about 82 MB.
    const std::string blob(100'000, 'x');
    for (int i = 0; i < 1500; ++i) {
        db.exec("INSERT INTO t (id, s) VALUES ($1, $2)", i, blob);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::filesystem::file_size(path) < 100'000'000 &&
           std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    CHECK(std::filesystem::file_size(path) >= 100'000'000);
    CHECK(std::filesystem::file_size(path + "-wal") < 90'000'000);
    CHECK(count(db) == 1500);
}

TEST_CASE("on Postgres, a notifier's NOTIFY reaches listeners of other connections") {
    TestDb t;
    if (t.db().backend() != Backend::postgres) {
        CHECK_FALSE(t.db().notifier("c"));  // one process: in-process wake-ups suffice
        return;
    }
    std::mutex mu;
    std::vector<std::string> heard;  // guarded by mu
    auto count = [&] {
        std::lock_guard lock(mu);
        return static_cast<int>(heard.size());
    };
    auto listener = t.db().listen("cairn_test_channel", [&](std::string_view payload) {
        std::lock_guard lock(mu);
        heard.emplace_back(payload);
    });
    // A listener reports once when it starts listening (anything sent before is due), with
    // no payload.
    for (int i = 0; i < 100 && count() == 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    REQUIRE(count() >= 1);
    const int before = count();
    {
        std::lock_guard lock(mu);
        CHECK(heard.front().empty());
    }

    auto other = t.open_another();
    auto notifier = other->notifier("cairn_test_channel", "from-other");
    REQUIRE(notifier);
    for (int i = 0; i < 10; ++i) notifier->notify();  // asked together: sent once or a few times
    for (int i = 0; i < 250 && count() == before; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    CHECK(count() > before);
    CHECK(count() <= before + 10);
    std::lock_guard lock(mu);
    CHECK(heard.back() == "from-other");
}

TEST_CASE("on Postgres, a stream of notify requests sends one notification per 10 ms at most") {
    TestDb t;
    if (t.db().backend() != Backend::postgres) return;  // no notifier on SQLite
    std::atomic<int> heard{0}, hello{0};
    auto listener = t.db().listen("cairn_gap_channel", [&](std::string_view payload) {
        ++(payload == "gap" ? heard : hello);  // hello: the listener's own, on connecting
    });
    for (int i = 0; i < 250 && hello.load() == 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    REQUIRE(hello.load() == 1);  // it listens now
    auto notifier = t.db().notifier("cairn_gap_channel", "gap");
    REQUIRE(notifier);
    notifier->notify();
    for (int i = 0; i < 250 && heard.load() == 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    REQUIRE(heard.load() == 1);

    // Ask without pause for 300 ms: every request is served, at least 10 ms apart, so at
    // most 31 notifications go (30 gaps and the one pending at the end).
    const auto start = std::chrono::steady_clock::now();
    int asked = 0;
    while (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(300)) {
        notifier->notify();
        ++asked;
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the last one arrives
    const int sent = heard.load() - 1;
    INFO("asked " << asked << " times, heard " << sent);
    CHECK(asked > 500);
    CHECK(sent >= 2);
    CHECK(sent <= 32);
}

TEST_CASE("on Postgres, the database analyses the tables that grew past their statistics") {
    TestDb t;
    Database& db = t.db();
    if (db.backend() != Backend::postgres) return;  // SQLite's planner needs no statistics
    // Autovacuum stays off these tables: its own ANALYZE, should it wake during the test,
    // would do the work the database's keeper is tested for.
    db.transact([](Transaction& tx) {
        tx.exec_script(
            "CREATE TABLE grown (id BIGINT PRIMARY KEY) WITH (autovacuum_enabled = false); "
            "CREATE TABLE small (id BIGINT PRIMARY KEY) WITH (autovacuum_enabled = false)");
    });
    // A grown table of another role in the same schema is not Cairn's to analyse.
    db.transact([](Transaction& tx) {
        tx.exec_script(
            "DO $$ BEGIN CREATE ROLE cairn_test_other; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$; "
            "CREATE TABLE theirs (id BIGINT PRIMARY KEY) WITH (autovacuum_enabled = false); "
            "INSERT INTO theirs SELECT generate_series(1, 1500); "
            "ALTER TABLE theirs OWNER TO cairn_test_other");
    });
    auto reltuples = [&](std::string_view table) {
        return db.exec("SELECT reltuples FROM pg_class WHERE relname = $1", table)
            .front()
            .get<double>(0);
    };
    CHECK(reltuples("grown") < 0);  // never analysed
    db.exec("INSERT INTO grown SELECT generate_series(1, 1500)");
    db.exec("INSERT INTO small SELECT generate_series(1, 10)");
    // The row counts it goes by reach the statistics views within a second or so; the
    // database's keeper looks every second.
    for (int i = 0; i < 100 && reltuples("grown") < 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    CHECK(reltuples("grown") == 1500);
    CHECK(reltuples("small") < 0);   // too small to matter
    CHECK(reltuples("theirs") < 0);  // another role's
    // Statistics in step with the table: nothing to do until it has four times the rows.
    db.exec("INSERT INTO grown SELECT generate_series(1501, 5000)");
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    CHECK(reltuples("grown") == 1500);
    auto conn = detail::connect_postgres(parse_database_url(t.url()));
    CHECK(detail::analyze_grown_tables(*conn).empty());
    db.exec("INSERT INTO grown SELECT generate_series(5001, 6000)");
    std::vector<std::string> analysed;
    for (int i = 0; i < 100 && analysed.empty() && reltuples("grown") == 1500; ++i) {
        analysed = detail::analyze_grown_tables(*conn);
        if (analysed.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    CHECK(reltuples("grown") == 6000);  // by the call above, or by the keeper meanwhile
}

TEST_CASE("a notifier whose server cannot be reached neither blocks its callers nor its end") {
    // Nothing listens on port 1; the notifier keeps retrying in the background.
    auto notifier = cairn::storage::detail::notifier_postgres(
        parse_database_url("postgres://postgres@127.0.0.1:1/none?connect_timeout=2"), "c");
    auto done = std::async(std::launch::async, [&] {
        for (int i = 0; i < 1000; ++i) notifier->notify();
        std::this_thread::sleep_for(std::chrono::milliseconds(300));  // let it fail and back off
        notifier.reset();
    });
    CHECK(done.wait_for(std::chrono::seconds(10)) == std::future_status::ready);
}

TEST_CASE("a notifier and a listener give up on a server that never answers") {
    // A socket that listens and never accepts: the kernel completes the handshake, so the
    // client's connection attempt waits for a reply that never comes. libpq alone would
    // wait forever; the default connect_timeout (5 s) ends each attempt, so the two can
    // stop. The bound below only tells "ends" from "hangs".
    const int silent = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(silent >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(silent, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(silent, 16) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(silent, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    const auto url = parse_database_url(
        fmt::format("postgres://postgres@127.0.0.1:{}/none", ntohs(addr.sin_port)));

    auto notifier = cairn::storage::detail::notifier_postgres(url, "c");
    auto listener = cairn::storage::detail::listen_postgres(url, "c", [](std::string_view) {});
    auto done = std::async(std::launch::async, [&] {
        notifier->notify();
        std::this_thread::sleep_for(std::chrono::milliseconds(200));  // both are connecting
        notifier.reset();
        listener.reset();
    });
    CHECK(done.wait_for(std::chrono::seconds(60)) == std::future_status::ready);
    ::close(silent);
}

TEST_CASE("on Postgres, a statement past the statement timeout is cancelled") {
    TestDb t;
    if (t.db().backend() != Backend::postgres) return;  // SQLite has no statement timeout
    const std::string sep = t.url().find('?') == std::string::npos ? "?" : "&";
    const std::string url = t.url() + sep + "statement_timeout_ms=200";
    auto db = Database::open(url);
    CHECK_THROWS_AS(db->read("SELECT pg_sleep(2)"), StorageError);
    CHECK(db->read("SELECT 1").front().get<std::int64_t>(0) == 1);  // the connection lives on
    // The default is 30 s, and statement_timeout_ms=0 turns it off.
    CHECK(t.db().read("SHOW statement_timeout").front().get<std::string>(0) == "30s");
    CHECK_THROWS_AS(Database::open(t.url() + sep + "statement_timeout_ms=-1"), ConfigError);
}
