#pragma once

// Internal to storage/: the interface each backend implements and the pool that lends
// connections to transactions. Not included by code outside storage/.

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string_view>
#include <vector>

#include "storage/database.hpp"

namespace cairn::storage::detail {

// One open connection. Used by one thread at a time (the pool guarantees it).
// Every method throws StorageError subclasses, never backend exceptions.
class Connection {
  public:
    virtual ~Connection() = default;
    virtual void begin(Access access) = 0;
    virtual void commit() = 0;
    virtual void rollback() = 0;
    virtual Result query(std::string_view sql, std::span<const Value> params) = 0;
    // One statement outside begin()/commit(), atomic on its own. The default wraps it in
    // a transaction; Postgres sends it alone (autocommit), saving two round trips.
    virtual Result query_once(std::string_view sql, std::span<const Value> params, Access access) {
        begin(access);
        try {
            Result r = query(sql, params);
            commit();
            return r;
        } catch (...) {
            rollback();
            throw;
        }
    }
    virtual void script(std::string_view sql) = 0;
    // False once the connection broke; the pool then drops it instead of reusing it.
    virtual bool healthy() const = 0;
};

using ConnectionFactory = std::function<std::unique_ptr<Connection>()>;

// A bounded set of connections made on demand by `factory`.
class Pool {
  public:
    Pool(std::string backend, ConnectionFactory factory, std::size_t max_size);
    ~Pool();

    // Lends a connection, making one if under max_size, else waiting up to `wait`.
    std::unique_ptr<PooledConnection> acquire(std::chrono::milliseconds wait);
    void give_back(std::unique_ptr<Connection> conn);

  private:
    std::string backend_;        // constant after construction
    ConnectionFactory factory_;  // constant after construction
    const std::size_t max_size_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<std::unique_ptr<Connection>> idle_;  // guarded by mu_
    std::size_t open_ = 0;                           // guarded by mu_: idle + lent
};

// A connection on loan; returns itself to the pool when destroyed.
class PooledConnection {
  public:
    PooledConnection(Pool& pool, std::unique_ptr<Connection> conn)
        : pool_(pool), conn_(std::move(conn)) {}
    ~PooledConnection() { pool_.give_back(std::move(conn_)); }
    PooledConnection(const PooledConnection&) = delete;
    PooledConnection& operator=(const PooledConnection&) = delete;
    Connection& get() { return *conn_; }

  private:
    Pool& pool_;
    std::unique_ptr<Connection> conn_;
};

// Copies a SQLite database's WAL back into the database file on a thread of its own, so
// a commit never waits for a checkpoint (storage/sqlite/).
class WalCheckpointer;
std::shared_ptr<WalCheckpointer> start_wal_checkpointer(const DatabaseUrl& url);

// Backend constructors, defined in storage/sqlite/ and storage/postgres/. A read-write
// SQLite connection given a checkpointer hands its checkpoints to it.
std::unique_ptr<Connection> connect_sqlite(const DatabaseUrl& url, Access access,
                                           std::shared_ptr<WalCheckpointer> checkpointer = {});
std::unique_ptr<Connection> connect_postgres(const DatabaseUrl& url);
std::unique_ptr<Listener> listen_postgres(const DatabaseUrl& url, std::string channel,
                                          Database::OnNotify on_notify);
std::unique_ptr<Notifier> notifier_postgres(const DatabaseUrl& url, std::string channel,
                                            std::string payload = {});

}  // namespace cairn::storage::detail
