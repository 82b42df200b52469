// Database and Transaction: opening a backend, lending connections to transactions, and
// running read-write transactions through the WriteBatcher where the backend has one writer.

#include "storage/database.hpp"

#include <fmt/format.h>

#include <exception>

#include "storage/detail/connection.hpp"
#include "storage/postgres/statistics.hpp"

namespace cairn::storage {

// ---- transactions -------------------------------------------------------------------------

Transaction::Transaction(std::unique_ptr<detail::PooledConnection> conn, const Dialect* dialect)
    : conn_(std::move(conn)), dialect_(dialect) {}

Transaction::Transaction(Transaction&& other) noexcept
    : conn_(std::move(other.conn_)),
      dialect_(other.dialect_),
      failed_(other.failed_),
      on_end_(std::move(other.on_end_)) {}

Transaction::~Transaction() {
    rollback();
}

detail::Connection& Transaction::connection() {
    return conn_->get();
}

void Transaction::check_usable(std::string_view sql) const {
    if (!conn_) throw StorageError(to_string(backend()), "transaction already ended", sql);
    if (failed_) {
        throw StorageError(to_string(backend()),
                           "transaction is spent after a failed statement; roll back", sql);
    }
}

Result Transaction::exec_values(std::string_view sql, std::span<const Value> params) {
    check_usable(sql);
    try {
        return connection().query(sql, params);
    } catch (...) {
        failed_ = true;
        throw;
    }
}

void Transaction::exec_script(std::string_view sql) {
    check_usable(sql);
    try {
        connection().script(sql);
    } catch (...) {
        failed_ = true;
        throw;
    }
}

void Transaction::commit() {
    check_usable("COMMIT");
    try {
        connection().commit();
    } catch (...) {
        failed_ = true;
        throw;
    }
    conn_.reset();
    end_callbacks(0, true);
}

void Transaction::rollback() noexcept {
    if (!conn_) return;
    try {
        connection().rollback();
    } catch (...) {
        // The connection is marked unhealthy by the backend and dropped by the pool.
    }
    conn_.reset();
    end_callbacks(0, false);
}

void Transaction::on_end(std::function<void(bool committed)> fn) {
    on_end_.push_back(std::move(fn));
}

void Transaction::end_callbacks(std::size_t from, bool committed) noexcept {
    if (from >= on_end_.size()) return;
    std::vector<std::function<void(bool)>> ending(
        std::make_move_iterator(on_end_.begin() + static_cast<long>(from)),
        std::make_move_iterator(on_end_.end()));
    on_end_.resize(from);
    for (auto& fn : ending) fn(committed);
}

// ---- transactions in a shared commit ------------------------------------------------------

const TransactionKind& TransactionKind::instance() {
    static const TransactionKind kind;
    return kind;
}

void TransactionKind::write(Transaction& tx, std::span<BatchedWrite* const> writes,
                            std::size_t batch_size) const {
    if (batch_size == 1) {  // alone in its batch: what it throws fails just the batch
        (*static_cast<TransactionWrite*>(writes.front())->fn)(tx);
        return;
    }
    for (BatchedWrite* w : writes) {
        const std::size_t callbacks = tx.on_end_.size();
        tx.exec("SAVEPOINT cairn_write");
        try {
            (*static_cast<TransactionWrite*>(w)->fn)(tx);
        } catch (...) {
            w->error = std::current_exception();
        }
        if (w->error) {
            // Undo this writer's part only. SQLite rolls back the whole transaction after
            // some errors (SQLITE_FULL, I/O errors); then no savepoint is left, and the
            // batch fails (and runs again a write at a time).
            tx.recover();
            tx.exec("ROLLBACK TO cairn_write");
            tx.end_callbacks(callbacks, false);
        }
        tx.exec("RELEASE cairn_write");
    }
}

// ---- database -----------------------------------------------------------------------------

Database::Database(DatabaseUrl url, std::unique_ptr<detail::Pool> writers,
                   std::unique_ptr<detail::Pool> readers)
    : url_(std::move(url)),
      dialect_(url_.backend),
      writers_(std::move(writers)),
      readers_(std::move(readers)) {
    const bool one_writer = url_.backend == Backend::sqlite;
    writes_ = std::make_unique<WriteBatcher>(
        *this, WriteBatcher::Options{.in_flight = one_writer ? 1U : 2U, .max_batch = 64});
    if (url_.backend == Backend::postgres)
        statistics_ = std::make_unique<detail::StatisticsKeeper>(url_);
}

Database::~Database() = default;

std::unique_ptr<Database> Database::open(std::string_view url_text) {
    DatabaseUrl url = parse_database_url(url_text);
    std::unique_ptr<detail::Pool> writers;
    std::unique_ptr<detail::Pool> readers;
    if (url.backend == Backend::sqlite) {
        // One writer connection (SQLite allows one writer at a time anyway), plus readers
        // that WAL lets run beside it. An in-memory database lives in one connection.
        const bool in_file = url.path != ":memory:";
        std::shared_ptr<detail::WalCheckpointer> checkpointer;
        if (in_file) checkpointer = detail::start_wal_checkpointer(url);
        writers = std::make_unique<detail::Pool>(
            "sqlite",
            [url, checkpointer] {
                return detail::connect_sqlite(url, Access::read_write, checkpointer);
            },
            1);
        if (in_file) {
            readers = std::make_unique<detail::Pool>(
                "sqlite", [url] { return detail::connect_sqlite(url, Access::read_only); },
                static_cast<std::size_t>(url.pool_size));
        }
    } else {
        writers = std::make_unique<detail::Pool>(
            "postgres", [url] { return detail::connect_postgres(url); },
            static_cast<std::size_t>(url.pool_size));
    }
    std::unique_ptr<Database> db(
        new Database(std::move(url), std::move(writers), std::move(readers)));
    // Open the first (writer) connection now, so a bad path or an unreachable server is
    // reported here rather than on first use; it creates the SQLite file and sets WAL.
    db->begin(Access::read_write, std::chrono::seconds(30)).rollback();
    return db;
}

std::unique_ptr<Listener> Database::listen(std::string_view channel, OnNotify on_notify) {
    if (backend() == Backend::sqlite) return nullptr;
    return detail::listen_postgres(url_, std::string(channel), std::move(on_notify));
}

std::unique_ptr<Notifier> Database::notifier(std::string_view channel, std::string payload) {
    if (backend() == Backend::sqlite) return nullptr;
    return detail::notifier_postgres(url_, std::string(channel), std::move(payload));
}

void Database::run(Access access, const std::function<void(Transaction&)>& fn) {
    // SQLite has one writer: its write transactions share commits. Postgres runs them side
    // by side, each on a connection of its own.
    if (access == Access::read_only || backend() != Backend::sqlite) {
        Transaction tx = begin(access);
        fn(tx);
        tx.commit();
        return;
    }
    TransactionWrite w(fn);
    writes_->write(w);
    if (w.error) std::rethrow_exception(w.error);
}

Result Database::exec_once(Access access, std::string_view sql, std::span<const Value> params) {
    if (access == Access::read_write && backend() == Backend::sqlite) {
        return transact([&](Transaction& tx) { return tx.exec_values(sql, params); });
    }
    detail::Pool& pool = (access == Access::read_only && readers_) ? *readers_ : *writers_;
    auto conn = pool.acquire(std::chrono::seconds(30));
    return conn->get().query_once(sql, params, access);
}

Transaction Database::begin(Access access, std::chrono::milliseconds wait) {
    detail::Pool& pool = (access == Access::read_only && readers_) ? *readers_ : *writers_;
    auto conn = pool.acquire(wait);
    conn->get().begin(access);
    return Transaction(std::move(conn), &dialect_);
}

}  // namespace cairn::storage
