#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "storage/errors.hpp"
#include "storage/result.hpp"
#include "storage/value.hpp"

namespace cairn::storage {

namespace detail {
class Connection;
class Pool;
class PooledConnection;
}  // namespace detail

enum class Backend { sqlite, postgres };
std::string_view to_string(Backend backend);

// Whether a transaction may write. On SQLite a read-only transaction runs on a reader
// connection beside the single writer (WAL); on Postgres it is BEGIN READ ONLY.
enum class Access { read_write, read_only };

// The few places where SQL differs between the backends. All other SQL is written once
// in the portable subset of SQLite 3.40 and Postgres 15 with $1..$n placeholders.
class Dialect {
  public:
    explicit Dialect(Backend backend) : backend_(backend) {}
    Backend backend() const { return backend_; }
    // A statement that takes a lock held until the transaction ends, serialising
    // migrations across processes; empty on SQLite (the write transaction serialises).
    std::string_view migration_lock() const;

  private:
    Backend backend_;
};

// Parsed form of a database URL:
//   sqlite://relative/path.db, sqlite:///absolute/path.db, sqlite::memory:
//   postgres://user:pass@host:port/db?pool=8   (postgresql:// is accepted too)
// Options after '?': pool=N (connections, default 8 for Postgres, 4 readers for SQLite),
// synchronous=normal|full (SQLite), busy_timeout_ms=N (SQLite), connect_timeout=N
// (Postgres, seconds), idle_tx_timeout_ms=N (Postgres, default 60000),
// random_page_cost=X (Postgres, default 1.1) and any other libpq parameter.
struct DatabaseUrl {
    Backend backend = Backend::sqlite;
    std::string path;  // SQLite file path or ":memory:"; Postgres: the URL without cairn options
    int pool_size = 0;
    std::string synchronous = "NORMAL";
    int busy_timeout_ms = 5000;
    // Postgres: the server ends a session idle inside a transaction this long (a stalled
    // or frozen client), releasing its locks so other workers can take its runs.
    int idle_tx_timeout_ms = 60'000;
    // Postgres: the planner's cost of a random page read, set on each connection. Cairn's
    // statements look rows up by key in tables that stay in memory; at the server's default
    // (4, for disks that seek) a generic plan scanned a young `queue` whole for each batch
    // of step records (docs/performance.md, section 17).
    std::string random_page_cost = "1.1";
    std::string redacted;  // the URL with any password replaced by "***", for logs
};

// Throws ConfigError with a message naming what is wrong.
DatabaseUrl parse_database_url(std::string_view url);

// A database transaction on a connection borrowed from the pool.
//
// Not thread-safe: one thread uses a Transaction at a time. The destructor rolls back
// when neither commit() nor rollback() ran, so an exception unwinding past a Transaction
// leaves nothing behind. After a statement fails the transaction is spent on both
// backends (Postgres aborts it; SQLite is made to match): later exec() and commit()
// throw, and only rollback or destruction is useful.
class Transaction {
  public:
    Transaction(Transaction&&) noexcept;
    Transaction& operator=(Transaction&&) = delete;
    Transaction(const Transaction&) = delete;
    ~Transaction();

    // Runs one statement with $1..$n bound to `args` (see to_value for the types).
    // The number of arguments must equal the highest placeholder used.
    template <class... Args>
    Result exec(std::string_view sql, Args&&... args) {
        if constexpr (sizeof...(Args) == 0) {
            return exec_values(sql, {});
        } else {
            const Value params[] = {to_value(std::forward<Args>(args))...};
            return exec_values(sql, params);
        }
    }
    Result exec_values(std::string_view sql, std::span<const Value> params);

    // Runs several ';'-separated statements without parameters (migrations).
    void exec_script(std::string_view sql);

    void commit();
    void rollback() noexcept;

    const Dialect& dialect() const { return *dialect_; }
    Backend backend() const { return dialect_->backend(); }

  private:
    friend class Database;
    Transaction(std::unique_ptr<detail::PooledConnection> conn, const Dialect* dialect);
    detail::Connection& connection();
    // Makes the transaction usable again after a failed statement, once the caller has
    // rolled back to a savepoint taken before it (group commit).
    void recover() { failed_ = false; }
    void check_usable(std::string_view sql) const;

    std::unique_ptr<detail::PooledConnection> conn_;
    const Dialect* dialect_;
    bool failed_ = false;
};

// A subscription to notifications; stops (and joins its thread) when destroyed.
class Listener {
  public:
    virtual ~Listener() = default;
};

// Signals a channel's listeners in other processes without making the caller wait.
class Notifier {
  public:
    virtual ~Notifier() = default;
    // Asks for one notification after this call; calls made while one is being sent share
    // the next. Never blocks on the database.
    virtual void notify() = 0;
};

// A database over one backend: a connection pool, transactions and the dialect.
// Thread-safe: any number of threads may call begin() at once; each gets its own
// connection (on SQLite all writers share the one writer connection in turn).
class Database {
  public:
    // Opens (and for SQLite creates) the database and checks that it answers.
    // Throws ConfigError for a malformed URL and ConnectionError when the database
    // cannot be opened or reached.
    static std::unique_ptr<Database> open(std::string_view url);

    ~Database();
    Database(const Database&) = delete;
    Database& operator=(const Database&) = delete;

    Backend backend() const { return dialect_.backend(); }
    const Dialect& dialect() const { return dialect_; }
    // The URL with the password masked, fit for logs.
    const std::string& url() const { return url_.redacted; }

    // Starts a transaction, waiting up to `wait` for a free connection (then
    // ConnectionError). Connection failures while connecting are retried briefly.
    Transaction begin(Access access = Access::read_write,
                      std::chrono::milliseconds wait = std::chrono::seconds(30));

    // Runs `fn(tx)` in a transaction and commits when it returns; an exception rolls
    // back and propagates. Returns what `fn` returns.
    //
    // On SQLite, read-write transactions from concurrent threads share one commit (group
    // commit): one thread runs a batch of them, each inside its own savepoint, and commits
    // once. Each caller returns only after that commit, with its own result or exception:
    // an exception rolls back to the caller's savepoint and leaves the rest of the batch
    // alone. Only if the shared transaction itself fails (an I/O error, a full disk, a
    // failed COMMIT) do all its callers get that error. So `fn` may run on another thread,
    // must neither commit nor roll back `tx` itself nor start a read-write transaction of
    // its own (it would wait for itself), and sees the uncommitted writes of the batch's
    // earlier callers, which commit with it.
    template <class Fn>
    auto transact(Fn&& fn, Access access = Access::read_write) {
        using Out = std::invoke_result_t<Fn, Transaction&>;
        if constexpr (std::is_void_v<Out>) {
            run(access, [&fn](Transaction& tx) { fn(tx); });
        } else {
            std::optional<Out> out;
            run(access, [&fn, &out](Transaction& tx) { out.emplace(fn(tx)); });
            return std::move(*out);
        }
    }

    // Calls `on_notify(payload)` from a background thread whenever a transaction that ran
    // `SELECT pg_notify(channel, payload)` commits, on Postgres (its own connection,
    // reconnected when lost); once with an empty payload on each (re)connect, as what was
    // sent meanwhile is unknown. Returns null on SQLite: one process, so in-process
    // signals suffice.
    using OnNotify = std::function<void(std::string_view payload)>;
    std::unique_ptr<Listener> listen(std::string_view channel, OnNotify on_notify);
    // Sends `SELECT pg_notify(channel, payload)` when asked, from a background thread with
    // its own connection (opened on first use, reopened when lost), on Postgres; null on
    // SQLite. Unlike a NOTIFY in the writer's transaction it does not serialise commits:
    // Postgres holds a database-wide lock from a notifying transaction's pre-commit until
    // its commit is flushed, so notifying writers commit one at a time. Requests made
    // within 10 ms of the last notification share the next one, sent when the 10 ms are
    // up: a lone request goes at once, a stream of them costs at most 100 a second.
    std::unique_ptr<Notifier> notifier(std::string_view channel, std::string payload = {});

    // One statement, atomic on its own: in a transaction of its own on SQLite, sent
    // alone (autocommit, one round trip instead of three) on Postgres.
    template <class... Args>
    Result exec(std::string_view sql, Args&&... args) {
        return once(Access::read_write, sql, std::forward<Args>(args)...);
    }

    // One reading statement (a reader connection on SQLite; autocommit on Postgres).
    template <class... Args>
    Result read(std::string_view sql, Args&&... args) {
        return once(Access::read_only, sql, std::forward<Args>(args)...);
    }
    Result exec_once(Access access, std::string_view sql, std::span<const Value> params);

    // Postgres: ANALYZE every table of the current schema owned by the connecting role
    // that has at least 1,000 rows and four times as many as its planner statistics say
    // (or none yet), as long as those statistics saw fewer than 100,000; returns their
    // names. A prepared statement's generic plan is made from those statistics and kept
    // until they change, so a plan made while the tables were nearly empty (scanning them
    // whole) would stay while they grow, until autovacuum's next ANALYZE, a minute or more
    // later. The engine calls this every second (docs/performance.md, section 15).
    // Nothing on SQLite, whose planner prefers an index without statistics.
    std::vector<std::string> analyze_grown_tables();

    // Group commit on SQLite (see transact): commits made and write transactions they
    // carried since the database was opened, and transactions waiting for a batch now.
    // All zero on Postgres.
    struct GroupCommitStats {
        std::uint64_t batches = 0;
        std::uint64_t transactions = 0;
        std::size_t waiting = 0;
    };
    GroupCommitStats group_commit_stats() const;

  private:
    struct GroupCommit;
    struct GroupWork;
    void run(Access access, const std::function<void(Transaction&)>& fn);
    void commit_batch(std::span<GroupWork* const> batch);

    template <class... Args>
    Result once(Access access, std::string_view sql, Args&&... args) {
        if constexpr (sizeof...(Args) == 0) {
            return exec_once(access, sql, {});
        } else {
            const Value params[] = {to_value(std::forward<Args>(args))...};
            return exec_once(access, sql, params);
        }
    }

    Database(DatabaseUrl url, std::unique_ptr<detail::Pool> writers,
             std::unique_ptr<detail::Pool> readers);

    DatabaseUrl url_;
    Dialect dialect_;
    std::unique_ptr<detail::Pool> writers_;
    std::unique_ptr<detail::Pool> readers_;  // null when readers share the writer pool
    std::unique_ptr<GroupCommit> group_;     // SQLite only
};

}  // namespace cairn::storage
