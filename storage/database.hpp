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
#include <vector>

#include "storage/errors.hpp"
#include "storage/result.hpp"
#include "storage/value.hpp"
#include "storage/write_batcher.hpp"

namespace cairn::storage {

namespace detail {
class Connection;
class Pool;
class PooledConnection;
class StatisticsKeeper;
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
    // migrations across processes, and lifts the statement timeout for it; empty on
    // SQLite (the write transaction serialises).
    std::string_view migration_lock() const;
    // Appended to a SELECT, locks the rows it returns until the transaction ends, so a
    // check made on them holds until the commit: " FOR UPDATE" on Postgres; empty on
    // SQLite, where the write transaction already excludes every other writer.
    std::string_view lock_rows() const;

  private:
    Backend backend_;
};

// Parsed form of a database URL:
//   sqlite://relative/path.db, sqlite:///absolute/path.db, sqlite::memory:
//   postgres://user:pass@host:port/db?pool=8   (postgresql:// is accepted too)
// Options after '?': pool=N (connections, default 8 for Postgres, 4 readers for SQLite),
// synchronous=normal|full (SQLite), busy_timeout_ms=N (SQLite), connect_timeout=N
// (Postgres, seconds), idle_tx_timeout_ms=N (Postgres, default 60000),
// statement_timeout_ms=N (Postgres, default 30000; 0 for none),
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
    int statement_timeout_ms = 30'000;  // Postgres; 0: none. Migrations run without one.
    // Postgres: the planner's cost of a random page read, set on each connection. Cairn's
    // statements look rows up by key in tables that stay in memory; at the server's default
    // (4, for disks that seek) a generic plan scanned a young `queue` whole for each batch
    // of step records.
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

    // Calls `fn(committed)` once this transaction's writes are durable (true) or rolled
    // back (false). In a commit shared with other writers (Database::transact on SQLite)
    // that is when the shared commit is durable, or when this writer's part is rolled back.
    // `fn` runs on the thread that ends the transaction (maybe a writer thread): it must
    // be quick and must not throw. For work that belongs after a commit, such as waking
    // whoever waits for the rows.
    void on_end(std::function<void(bool committed)> fn);

    const Dialect& dialect() const { return *dialect_; }
    Backend backend() const { return dialect_->backend(); }

  private:
    friend class Database;
    friend class TransactionKind;
    Transaction(std::unique_ptr<detail::PooledConnection> conn, const Dialect* dialect);
    detail::Connection& connection();
    // Makes the transaction usable again after a failed statement, once the caller has
    // rolled back to a savepoint taken before it (group commit).
    void recover() { failed_ = false; }
    void check_usable(std::string_view sql) const;
    // Ends the on_end callbacks from index `from` on, with `committed`.
    void end_callbacks(std::size_t from, bool committed) noexcept;

    std::unique_ptr<detail::PooledConnection> conn_;
    const Dialect* dialect_;
    bool failed_ = false;
    std::vector<std::function<void(bool)>> on_end_;
};

// A transaction's function waiting in a WriteBatcher: what Database::transact queues on
// SQLite, and what the engine queues for writes that are no record (a fenced release).
// In a shared batch it runs inside a savepoint of its own, so what it throws rolls back
// its writes alone and reaches its own writer (`error`).
class TransactionKind final : public WriteKind {
  public:
    static const TransactionKind& instance();
    void write(Transaction& tx, std::span<BatchedWrite* const> writes,
               std::size_t batch_size) const override;
};

struct TransactionWrite final : BatchedWrite {
    explicit TransactionWrite(const std::function<void(Transaction&)>& f)
        : BatchedWrite(TransactionKind::instance()), fn(&f) {}
    const std::function<void(Transaction&)>* fn;
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
    // On SQLite, which has one writer, read-write transactions go through the
    // WriteBatcher (writes()): concurrent ones share one commit, each inside its own
    // savepoint. Each caller returns only after that commit, with its own result or
    // exception: an exception rolls back to the caller's savepoint and leaves the rest of
    // the batch alone. So `fn` may run on another thread and more than once (a batch that
    // fails as a whole is run again a caller at a time), must neither commit nor roll back
    // `tx` itself nor start a read-write transaction of its own (it would wait for
    // itself), and sees the uncommitted writes of the batch's earlier callers, which commit
    // with it. On Postgres each call is a transaction of its own on its own connection.
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

    // The group commit that concurrent writers share (WriteBatcher): every read-write
    // transact() on SQLite, and the engine's records and events on both backends.
    WriteBatcher& writes() { return *writes_; }

  private:
    void run(Access access, const std::function<void(Transaction&)>& fn);

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
    // Destroyed before the pools: they write (or read) through them.
    std::unique_ptr<detail::StatisticsKeeper> statistics_;  // Postgres only
    std::unique_ptr<WriteBatcher> writes_;
};

}  // namespace cairn::storage
