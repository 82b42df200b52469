// The WriteBatcher (group commit) with kinds of the test's own, on SQLite and Postgres.
#include "storage/write_batcher.hpp"

#include <doctest/doctest.h>
#include <fmt/format.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "common/threads.hpp"
#include "storage/database.hpp"
#include "support/test_db.hpp"

using namespace cairn::storage;
using cairn::testing::TestDb;
using namespace std::chrono_literals;

namespace {

// A row of table w, written by RowKind; the batch's rows go in one statement.
struct RowWrite final : BatchedWrite {
    RowWrite(const WriteKind& kind, std::int64_t i) : BatchedWrite(kind), id(i) {}
    std::int64_t id;
    bool written = false;
};

// Rows of several writes in one INSERT. With `alone`, on Postgres they commit on their
// own (one statement in autocommit) instead of in the batch's transaction. A gate, while
// closed, holds every write at its start.
class RowKind final : public WriteKind {
  public:
    explicit RowKind(bool alone = false) : alone_(alone) {}

    void write(Transaction& tx, std::span<BatchedWrite* const> writes,
               std::size_t /*batch_size*/) const override {
        wait_for_gate();
        insert([&tx](const std::string& sql, std::span<const Value> v) { tx.exec_values(sql, v); },
               writes);
    }
    bool commits_alone(const Database& db) const override {
        return alone_ && db.backend() == Backend::postgres;
    }
    void write_alone(Database& db, std::span<BatchedWrite* const> writes) const override {
        wait_for_gate();
        insert([&db](const std::string& sql,
                     std::span<const Value> v) { db.exec_once(Access::read_write, sql, v); },
               writes);
    }

    void close_gate() {
        std::lock_guard lock(mu_);
        open_ = false;
    }
    void open_gate() {
        {
            std::lock_guard lock(mu_);
            open_ = true;
        }
        cv_.notify_all();
    }
    // Waits until `n` writes are held at the gate.
    bool await_held(int n) const {
        std::unique_lock lock(mu_);
        return cv_.wait_for(lock, 20s, [&] { return held_ >= n; });
    }
    std::vector<std::size_t> sizes() const {
        std::lock_guard lock(mu_);
        return sizes_;
    }

  private:
    template <class Exec>
    void insert(Exec&& exec, std::span<BatchedWrite* const> writes) const {
        std::string values;
        std::vector<Value> params;
        for (BatchedWrite* w : writes) {
            params.emplace_back(static_cast<RowWrite*>(w)->id);
            values += fmt::format("{}(${})", params.size() == 1 ? "" : ", ", params.size());
        }
        exec("INSERT INTO w (id) VALUES " + values, params);
        for (BatchedWrite* w : writes) static_cast<RowWrite*>(w)->written = true;
        std::lock_guard lock(mu_);
        sizes_.push_back(writes.size());
    }
    void wait_for_gate() const {
        std::unique_lock lock(mu_);
        ++held_;
        cv_.notify_all();
        cv_.wait(lock, [this] { return open_; });
        --held_;
    }

    const bool alone_;
    mutable std::mutex mu_;
    mutable std::condition_variable cv_;
    bool open_ = true;                        // guarded by mu_
    mutable int held_ = 0;                    // guarded by mu_
    mutable std::vector<std::size_t> sizes_;  // guarded by mu_
};

struct Fixture {
    TestDb t;
    Fixture() {
        t.db().transact(
            [](Transaction& tx) { tx.exec_script("CREATE TABLE w (id BIGINT PRIMARY KEY)"); });
    }
    std::int64_t rows() {
        return t.db().read("SELECT count(*) FROM w").front().get<std::int64_t>(0);
    }
};

// Waits until `n` writes are queued in `b`.
bool await_waiting(const WriteBatcher& b, std::size_t n) {
    for (int i = 0; i < 2000; ++i) {
        if (b.stats().waiting >= n) return true;
        std::this_thread::sleep_for(10ms);
    }
    return false;
}

}  // namespace

TEST_CASE("a write that finds nothing queued is written at once, on its caller's thread") {
    Fixture f;
    RowKind kind;
    WriteBatcher b(f.t.db(), {.in_flight = 1, .max_batch = 64});
    RowWrite w(kind, 1);
    b.write(w);
    CHECK(w.written);
    CHECK_FALSE(w.error);
    CHECK(f.rows() == 1);
    const auto stats = b.stats();
    CHECK(stats.batches == 1);
    CHECK(stats.shared_batches == 0);
    CHECK(stats.writer_cpu_ns == 0);  // no writer thread wrote anything
}

TEST_CASE("writes queued behind a batch in flight share the next batch; each fails alone") {
    Fixture f;
    RowKind kind(true);
    WriteBatcher b(f.t.db(), {.in_flight = 1, .max_batch = 64});
    kind.close_gate();
    RowWrite first(kind, 1);
    std::thread holder([&] { b.write(first); });
    REQUIRE(kind.await_held(1));
    // Queued meanwhile: eight rows, one of them a key the table already has (first's).
    constexpr int kQueued = 8;
    std::vector<std::unique_ptr<RowWrite>> queued;
    std::atomic<int> done{0};
    for (int i = 0; i < kQueued; ++i) {
        queued.push_back(std::make_unique<RowWrite>(kind, i == 3 ? 1 : 10 + i));
        b.submit(*queued.back(), [&done] { ++done; });  // returns: the batch waits
    }
    REQUIRE(await_waiting(b, kQueued));
    CHECK(done == 0);
    kind.open_gate();
    holder.join();
    for (int i = 0; i < 2000 && done < kQueued; ++i) std::this_thread::sleep_for(10ms);
    CHECK(done == kQueued);  // each told once
    for (int i = 0; i < kQueued; ++i) {
        const RowWrite& w = *queued[static_cast<std::size_t>(i)];
        CHECK(bool(w.error) == (i == 3));  // the duplicate key, and it alone
        CHECK(w.written == (i != 3));
    }
    CHECK(f.rows() == 1 + kQueued - 1);
    // The first alone; the eight as one batch, which failed and was written again one by
    // one (the kind saw a batch of 8 fail, then each alone).
    const auto sizes = kind.sizes();
    REQUIRE_FALSE(sizes.empty());
    CHECK(sizes.front() == 1);
    const auto stats = b.stats();
    CHECK(stats.batches == 2);
    CHECK(stats.shared_batches == 1);
    CHECK(stats.shared_writes == kQueued);
    CHECK(stats.writer_cpu_ns > 0);  // the shared batch was the writer thread's
}

TEST_CASE("a batch's kinds that commit alone are released before the others' transaction") {
    Fixture f;
    if (f.t.db().backend() != Backend::postgres) return;  // SQLite's commit is the batch's
    // The second kind writes in the batch's transaction, held at its gate; the first, which
    // commits alone, is not held with it.
    RowKind first_kind(true), second_kind(false);
    WriteBatcher b(f.t.db(), {.in_flight = 1, .max_batch = 64});
    // Hold a batch in flight so that the next two writes share a batch.
    RowKind holder_kind;
    holder_kind.close_gate();
    RowWrite held(holder_kind, 1);
    std::thread holder([&] { b.write(held); });
    REQUIRE(holder_kind.await_held(1));
    RowWrite a(first_kind, 2), c(second_kind, 3);
    std::atomic<bool> a_done{false};
    b.submit(a, [&] { a_done = true; });
    second_kind.close_gate();
    std::atomic<bool> c_done{false};
    b.submit(c, [&] { c_done = true; });
    REQUIRE(await_waiting(b, 2));
    holder_kind.open_gate();
    holder.join();
    // The second kind is held at its gate, yet the first kind's writer is already told.
    REQUIRE(second_kind.await_held(1));
    for (int i = 0; i < 2000 && !a_done; ++i) std::this_thread::sleep_for(10ms);
    CHECK(a_done);
    CHECK(f.rows() == 2);
    second_kind.open_gate();
    for (int i = 0; i < 2000 && !c_done; ++i) std::this_thread::sleep_for(10ms);
    CHECK(c.written);
    CHECK(f.rows() == 3);
}

TEST_CASE("with a batch of one at most, every write commits on its own") {
    Fixture f;
    RowKind kind;
    WriteBatcher b(f.t.db(), {.in_flight = 1, .max_batch = 64});
    b.set_max_batch(1);
    kind.close_gate();
    RowWrite first(kind, 1);
    std::thread holder([&] { b.write(first); });
    REQUIRE(kind.await_held(1));
    std::vector<std::unique_ptr<RowWrite>> queued;
    for (int i = 0; i < 5; ++i) {
        queued.push_back(std::make_unique<RowWrite>(kind, 10 + i));
        b.submit(*queued.back(), [] {});
    }
    REQUIRE(await_waiting(b, 5));
    kind.open_gate();
    holder.join();
    for (int i = 0; i < 2000 && f.rows() < 6; ++i) std::this_thread::sleep_for(10ms);
    CHECK(f.rows() == 6);
    CHECK(b.stats().shared_batches == 0);
}

TEST_CASE("a batcher being destroyed writes what is queued first") {
    Fixture f;
    RowKind kind;
    std::vector<std::unique_ptr<RowWrite>> queued;
    std::atomic<int> done{0};
    {
        WriteBatcher b(f.t.db(), {.in_flight = 1, .max_batch = 64});
        kind.close_gate();
        RowWrite first(kind, 1);
        std::thread holder([&] { b.write(first); });
        REQUIRE(kind.await_held(1));
        for (int i = 0; i < 4; ++i) {
            queued.push_back(std::make_unique<RowWrite>(kind, 10 + i));
            b.submit(*queued.back(), [&done] { ++done; });
        }
        REQUIRE(await_waiting(b, 4));
        kind.open_gate();
        holder.join();
    }  // destroyed here, perhaps before the writer thread took the queue
    CHECK(done == 4);
    CHECK(f.rows() == 5);
}

// The scheduling policy of each of this process's threads named `name`.
static std::set<int> policies_of(const std::string& name) {
    std::set<int> out;
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
        std::ifstream stat(task.path() / "stat");
        std::string line;
        if (!std::getline(stat, line)) continue;
        const auto open = line.find('('), close = line.rfind(')');
        if (open == std::string::npos || close == std::string::npos) continue;
        if (line.substr(open + 1, close - open - 1) != name) continue;
        std::istringstream rest(line.substr(close + 2));
        std::string field;
        for (int i = 3; i <= 41 && rest >> field; ++i) {
            if (i == 41) out.insert(std::stoi(field));
        }
    }
    return out;
}

TEST_CASE("writer threads run under the normal policy, whoever started them") {
    Fixture f;
    RowKind kind;
    WriteBatcher b(f.t.db(), {.in_flight = 1, .max_batch = 64});
    kind.close_gate();
    RowWrite first(kind, 1), second(kind, 2);
    // Both writers under SCHED_BATCH, as the engine's workers are: the first holds the one
    // slot, the second queues and so starts the writer threads, which inherit its policy.
    std::thread holder([&] {
        cairn::set_batch_scheduling(true);
        b.write(first);
    });
    REQUIRE(kind.await_held(1));
    std::thread queuer([&] {
        cairn::set_batch_scheduling(true);
        b.write(second);
    });
    REQUIRE(await_waiting(b, 1));
    std::set<int> policies;
    for (int i = 0; i < 500 && policies.empty(); ++i) {
        policies = policies_of("cairn-writer");
        if (policies.empty()) std::this_thread::sleep_for(10ms);
    }
    kind.open_gate();
    holder.join();
    queuer.join();
    CHECK(policies == std::set<int>{SCHED_OTHER});
    CHECK(f.rows() == 2);
}
