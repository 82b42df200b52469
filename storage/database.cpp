#include "storage/database.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>

#include "common/threads.hpp"
#include "storage/detail/connection.hpp"

namespace cairn::storage {

// ---- errors -------------------------------------------------------------------------------

namespace {
std::string describe(std::string_view backend, std::string_view message,
                     std::string_view statement) {
    constexpr std::size_t kMaxStatement = 300;
    if (statement.empty()) return fmt::format("{}: {}", backend, message);
    std::string sql(statement.substr(0, kMaxStatement));
    for (char& c : sql) {
        if (c == '\n' || c == '\t') c = ' ';
    }
    return fmt::format("{}: {} [in: {}{}]", backend, message, sql,
                       statement.size() > kMaxStatement ? "..." : "");
}
}  // namespace

StorageError::StorageError(std::string_view backend, std::string_view message,
                           std::string_view statement)
    : std::runtime_error(describe(backend, message, statement)),
      backend_(backend),
      message_(message),
      statement_(statement) {}

// ---- dialect and URLs ---------------------------------------------------------------------

std::string_view to_string(Backend backend) {
    return backend == Backend::sqlite ? "sqlite" : "postgres";
}

std::string_view Dialect::migration_lock() const {
    // Any fixed 64-bit key works; this one spells "cairn" in ASCII.
    return backend_ == Backend::postgres ? "SELECT pg_advisory_xact_lock(435610234222)" : "";
}

namespace {

int parse_positive(std::string_view key, std::string_view text, int max) {
    int n = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (ec != std::errc{} || end != text.data() + text.size() || n < 1 || n > max) {
        throw ConfigError(fmt::format("database URL option {}={} must be an integer from 1 to {}",
                                      key, text, max));
    }
    return n;
}

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

}  // namespace

DatabaseUrl parse_database_url(std::string_view url) {
    constexpr std::string_view kExpected =
        "expected sqlite://PATH, sqlite::memory: or postgres://USER:PASS@HOST:PORT/DB";
    DatabaseUrl out;
    std::string_view rest;
    if (url == "sqlite::memory:") {
        out.backend = Backend::sqlite;
        out.path = ":memory:";
        out.redacted = std::string(url);
        out.pool_size = 1;
        return out;
    }
    if (url.starts_with("sqlite://")) {
        out.backend = Backend::sqlite;
        rest = url.substr(9);
    } else if (url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        out.backend = Backend::postgres;
        rest = url.substr(url.find("://") + 3);
    } else {
        throw ConfigError(fmt::format("unsupported database URL '{}': {}", url, kExpected));
    }

    std::string_view base = rest;
    std::string_view query;
    if (auto q = rest.find('?'); q != std::string_view::npos) {
        base = rest.substr(0, q);
        query = rest.substr(q + 1);
    }

    std::string passthrough;  // libpq options we do not interpret
    while (!query.empty()) {
        auto amp = query.find('&');
        std::string_view pair = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
        if (pair.empty()) continue;
        auto eq = pair.find('=');
        if (eq == std::string_view::npos || eq == 0) {
            throw ConfigError(
                fmt::format("database URL option '{}' is not of the form key=value", pair));
        }
        std::string_view key = pair.substr(0, eq);
        std::string_view value = pair.substr(eq + 1);
        if (key == "pool") {
            out.pool_size = parse_positive(key, value, 256);
        } else if (out.backend == Backend::sqlite && key == "synchronous") {
            std::string v = lower(value);
            if (v != "normal" && v != "full") {
                throw ConfigError(fmt::format(
                    "database URL option synchronous={} must be normal or full", value));
            }
            out.synchronous = v == "full" ? "FULL" : "NORMAL";
        } else if (out.backend == Backend::sqlite && key == "busy_timeout_ms") {
            out.busy_timeout_ms = parse_positive(key, value, 600000);
        } else if (out.backend == Backend::postgres && key == "idle_tx_timeout_ms") {
            out.idle_tx_timeout_ms = parse_positive(key, value, 86'400'000);
        } else if (out.backend == Backend::postgres && key == "random_page_cost") {
            double cost = 0;
            auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), cost);
            if (ec != std::errc{} || end != value.data() + value.size() || !(cost > 0) ||
                cost > 1000) {
                throw ConfigError(fmt::format(
                    "database URL option random_page_cost={} must be a number above 0, at most "
                    "1000",
                    value));
            }
            out.random_page_cost = std::string(value);
        } else if (out.backend == Backend::sqlite) {
            throw ConfigError(fmt::format(
                "unknown SQLite URL option '{}' (known: pool, synchronous, busy_timeout_ms)", key));
        } else {
            if (!passthrough.empty()) passthrough += '&';
            passthrough += pair;
        }
    }

    if (out.backend == Backend::sqlite) {
        if (base.empty())
            throw ConfigError(fmt::format("database URL '{}' names no file: {}", url, kExpected));
        out.path = std::string(base);
        if (out.pool_size == 0) out.pool_size = 4;
        out.redacted = std::string(url);
        return out;
    }

    // Postgres: keep the URL for libpq (it validates the rest), minus our own options.
    if (base.empty() || base.front() == '/' || base.front() == '@' || base.front() == ':') {
        throw ConfigError(fmt::format("database URL '{}' names no host: {}", url, kExpected));
    }
    std::string scheme(url.substr(0, url.find("://") + 3));
    out.path = scheme + std::string(base) + (passthrough.empty() ? "" : "?" + passthrough);
    if (out.pool_size == 0) out.pool_size = 8;

    std::string redacted = out.path;
    auto at = base.rfind('@');
    if (at != std::string_view::npos) {
        auto colon = base.substr(0, at).find(':');
        if (colon != std::string_view::npos) {
            redacted = scheme + std::string(base.substr(0, colon)) + ":***" +
                       std::string(base.substr(at)) +
                       (passthrough.empty() ? "" : "?" + passthrough);
        }
    }
    out.redacted = redacted;
    return out;
}

// ---- rows ---------------------------------------------------------------------------------

std::size_t Row::index_of(std::string_view column) const {
    const auto& cols = data_->columns;
    for (std::size_t i = 0; i < cols.size(); ++i) {
        if (cols[i] == column) return i;
    }
    throw StorageError(data_->backend, fmt::format("result has no column '{}'", column));
}

const Value& Row::raw(std::size_t column) const {
    const auto n = data_->columns.size();
    if (column >= n || row_ >= data_->rows()) {
        throw StorageError(data_->backend,
                           fmt::format("cell ({}, {}) is out of range", row_, column));
    }
    return data_->cells[row_ * n + column];
}

bool Row::is_null(std::size_t column) const {
    return std::holds_alternative<std::monostate>(raw(column));
}

namespace {

[[noreturn]] void bad_cell(const std::string& backend, const std::string& column,
                           std::string_view want, std::string_view got) {
    throw StorageError(backend,
                       fmt::format("column '{}': cannot read {} as {}", column, got, want));
}

template <class Int>
Int parse_int(std::string_view text, bool& ok) {
    Int v{};
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    ok = ec == std::errc{} && end == text.data() + text.size();
    return v;
}

}  // namespace

template <>
std::int64_t Row::get<std::int64_t>(std::size_t column) const {
    const Value& v = raw(column);
    const std::string& name = data_->columns[column];
    if (auto* i = std::get_if<std::int64_t>(&v)) return *i;
    if (auto* s = std::get_if<std::string>(&v)) {
        bool ok = false;
        auto out = parse_int<std::int64_t>(*s, ok);
        if (ok) return out;
        bad_cell(data_->backend, name, "an integer", fmt::format("text '{}'", s->substr(0, 40)));
    }
    if (auto* d = std::get_if<double>(&v); d && std::trunc(*d) == *d && std::abs(*d) < 9.0e15) {
        return static_cast<std::int64_t>(*d);
    }
    bad_cell(data_->backend, name, "an integer", is_null(column) ? "NULL" : "a non-integer");
}

template <>
int Row::get<int>(std::size_t column) const {
    auto v = get<std::int64_t>(column);
    if (v < INT32_MIN || v > INT32_MAX) {
        bad_cell(data_->backend, data_->columns[column], "a 32-bit integer", std::to_string(v));
    }
    return static_cast<int>(v);
}

template <>
double Row::get<double>(std::size_t column) const {
    const Value& v = raw(column);
    if (auto* d = std::get_if<double>(&v)) return *d;
    if (auto* i = std::get_if<std::int64_t>(&v)) return static_cast<double>(*i);
    if (auto* s = std::get_if<std::string>(&v)) {
        // Postgres spells the special values out.
        if (*s == "NaN") return std::nan("");
        if (*s == "Infinity") return HUGE_VAL;
        if (*s == "-Infinity") return -HUGE_VAL;
        double out = 0;
        auto [end, ec] = std::from_chars(s->data(), s->data() + s->size(), out);
        if (ec == std::errc{} && end == s->data() + s->size()) return out;
        bad_cell(data_->backend, data_->columns[column], "a number",
                 fmt::format("text '{}'", s->substr(0, 40)));
    }
    bad_cell(data_->backend, data_->columns[column], "a number", "NULL");
}

template <>
bool Row::get<bool>(std::size_t column) const {
    const Value& v = raw(column);
    if (auto* b = std::get_if<bool>(&v)) return *b;
    if (auto* i = std::get_if<std::int64_t>(&v)) return *i != 0;
    if (auto* s = std::get_if<std::string>(&v)) {
        if (*s == "t" || *s == "true" || *s == "1") return true;
        if (*s == "f" || *s == "false" || *s == "0") return false;
        bad_cell(data_->backend, data_->columns[column], "a boolean",
                 fmt::format("text '{}'", s->substr(0, 40)));
    }
    bad_cell(data_->backend, data_->columns[column], "a boolean",
             is_null(column) ? "NULL" : "a number");
}

template <>
std::string Row::get<std::string>(std::size_t column) const {
    const Value& v = raw(column);
    if (auto* s = std::get_if<std::string>(&v)) return *s;
    if (auto* i = std::get_if<std::int64_t>(&v)) return std::to_string(*i);
    if (auto* d = std::get_if<double>(&v)) return fmt::format("{}", *d);
    if (auto* b = std::get_if<bool>(&v)) return *b ? "true" : "false";
    bad_cell(data_->backend, data_->columns[column], "text", "NULL");
}

// ---- pool ---------------------------------------------------------------------------------

namespace detail {

Pool::Pool(std::string backend, ConnectionFactory factory, std::size_t max_size)
    : backend_(std::move(backend)), factory_(std::move(factory)), max_size_(max_size) {}

Pool::~Pool() = default;

std::unique_ptr<PooledConnection> Pool::acquire(std::chrono::milliseconds wait) {
    std::unique_lock lock(mu_);
    const auto deadline = std::chrono::steady_clock::now() + wait;
    for (;;) {
        if (!idle_.empty()) {
            auto conn = std::move(idle_.back());
            idle_.pop_back();
            return std::make_unique<PooledConnection>(*this, std::move(conn));
        }
        if (open_ < max_size_) {
            ++open_;
            lock.unlock();
            // Connect outside the lock; a refused connection is retried a few times so a
            // database restarting under us does not fail the caller at once.
            constexpr int kAttempts = 3;
            for (int attempt = 1;; ++attempt) {
                try {
                    return std::make_unique<PooledConnection>(*this, factory_());
                } catch (const ConnectionError&) {
                    if (attempt == kAttempts) {
                        std::lock_guard relock(mu_);
                        --open_;
                        cv_.notify_one();
                        throw;
                    }
                    std::this_thread::sleep_for(std::chrono::milliseconds(100 * attempt));
                } catch (...) {
                    std::lock_guard relock(mu_);
                    --open_;
                    cv_.notify_one();
                    throw;
                }
            }
        }
        if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && idle_.empty() &&
            open_ >= max_size_) {
            throw ConnectionError(
                backend_, fmt::format("no free connection within {} ms (pool of {})", wait.count(),
                                      max_size_));
        }
    }
}

void Pool::give_back(std::unique_ptr<Connection> conn) {
    std::lock_guard lock(mu_);
    if (conn && conn->healthy()) {
        idle_.push_back(std::move(conn));
    } else {
        --open_;
    }
    cv_.notify_one();
}

}  // namespace detail

// ---- transactions -------------------------------------------------------------------------

Transaction::Transaction(std::unique_ptr<detail::PooledConnection> conn, const Dialect* dialect)
    : conn_(std::move(conn)), dialect_(dialect) {}

Transaction::Transaction(Transaction&& other) noexcept
    : conn_(std::move(other.conn_)), dialect_(other.dialect_), failed_(other.failed_) {}

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
}

void Transaction::rollback() noexcept {
    if (!conn_) return;
    try {
        connection().rollback();
    } catch (...) {
        // The connection is marked unhealthy by the backend and dropped by the pool.
    }
    conn_.reset();
}

// ---- group commit (SQLite) ----------------------------------------------------------------

// One read-write transaction waiting for a batch to carry it.
struct Database::GroupWork {
    const std::function<void(Transaction&)>* fn;
    std::exception_ptr error;  // what fn threw, or why the batch failed
    bool done = false;         // guarded by GroupCommit::mu
    std::condition_variable cv;
};

// SQLite has one writer, so concurrent write transactions would take turns, each paying
// for its own commit: writing every page it touched to the WAL (a ticket with its event,
// run, queue item and change record touches about 14) and the lock hand-over. Instead
// waiting transactions share commits: a batch runs up to kMaxBatch of them in one
// transaction, commits once and wakes their callers.
//
// A transaction that finds no batch running and nothing queued runs at once on its caller's
// thread (a batch of one, no hand-over). Any that must wait are written by the writer
// thread, started at the first such wait, which runs batch after batch while transactions
// are queued. Handing the batches from caller to caller instead (each leader waking the
// next) was slower: docs/performance.md, section 11.
struct Database::GroupCommit {
    static constexpr std::size_t kMaxBatch = 64;

    explicit GroupCommit(Database& database) : db(database) {}
    ~GroupCommit() {
        {
            std::lock_guard lock(mu);
            stopping = true;
        }
        writer_cv.notify_one();
        if (writer.joinable()) writer.join();
    }

    // Runs the batch at the head of the queue; called and returns with `lock` held.
    void lead(std::unique_lock<std::mutex>& lock) {
        leading = true;
        const std::size_t n = std::min(queue.size(), kMaxBatch);
        std::vector<GroupWork*> batch(queue.begin(), queue.begin() + static_cast<long>(n));
        queue.erase(queue.begin(), queue.begin() + static_cast<long>(n));
        lock.unlock();
        db.commit_batch(batch);
        lock.lock();
        leading = false;
        ++stats.batches;
        stats.transactions += batch.size();
        for (GroupWork* w : batch) {
            w->done = true;
            w->cv.notify_one();
        }
    }

    // Called with `lock` held, when transactions are queued and no batch runs: wakes the
    // writer thread, or runs the queue on this thread if the writer cannot be started.
    void hand_on(std::unique_lock<std::mutex>& lock) {
        try {
            if (!writer.joinable()) writer = std::thread([this] { write_loop(); });
            writer_cv.notify_one();
            return;
        } catch (const std::system_error&) {
            // No thread to be had (resources exhausted): the callers lead, as they can.
        }
        while (!queue.empty()) lead(lock);
    }

    void write_loop() {
        name_this_thread("cairn-dbwriter");
        set_batch_scheduling(false);  // started by whichever caller had to wait first
        std::unique_lock lock(mu);
        for (;;) {
            writer_cv.wait(lock, [this] { return !leading && (stopping || !queue.empty()); });
            if (queue.empty()) return;  // stopping, and nothing is left to write
            while (!queue.empty()) lead(lock);
        }
    }

    Database& db;
    std::mutex mu;
    std::deque<GroupWork*> queue;  // guarded by mu
    bool leading = false;          // guarded by mu: a batch is being run
    bool stopping = false;         // guarded by mu
    GroupCommitStats stats;        // guarded by mu; `waiting` is queue.size()
    std::condition_variable writer_cv;  // wakes the writer thread
    std::thread writer;                 // guarded by mu; last, joined first
};

Database::GroupCommitStats Database::group_commit_stats() const {
    if (!group_) return {};
    std::lock_guard lock(group_->mu);
    GroupCommitStats out = group_->stats;
    out.waiting = group_->queue.size();
    return out;
}

void Database::run(Access access, const std::function<void(Transaction&)>& fn) {
    if (!group_ || access == Access::read_only) {
        Transaction tx = begin(access);
        fn(tx);
        tx.commit();
        return;
    }
    GroupCommit& g = *group_;
    GroupWork mine{&fn, nullptr};
    std::unique_lock lock(g.mu);
    g.queue.push_back(&mine);
    if (!g.leading && g.queue.size() == 1) {
        g.lead(lock);  // a batch of this one alone
        if (!g.queue.empty()) g.hand_on(lock);
    } else {
        if (!g.leading) g.hand_on(lock);
        mine.cv.wait(lock, [&mine] { return mine.done; });
    }
    lock.unlock();
    if (mine.error) std::rethrow_exception(mine.error);
}

void Database::commit_batch(std::span<GroupWork* const> batch) {
    try {
        Transaction tx = begin(Access::read_write);
        if (batch.size() == 1) {
            try {
                (*batch.front()->fn)(tx);
            } catch (...) {
                batch.front()->error = std::current_exception();
                return;  // rolled back by tx's destructor
            }
            tx.commit();
            return;
        }
        for (GroupWork* w : batch) {
            tx.exec("SAVEPOINT cairn_batch");
            try {
                (*w->fn)(tx);
            } catch (...) {
                w->error = std::current_exception();
            }
            if (w->error) {
                // Undo this caller's writes only. SQLite rolls back the whole transaction
                // after some errors (SQLITE_FULL, I/O errors); then there is no savepoint
                // left and the batch fails with the cause.
                tx.recover();
                try {
                    tx.exec("ROLLBACK TO cairn_batch");
                } catch (...) {
                    for (GroupWork* other : batch) {
                        if (!other->error) other->error = w->error;
                    }
                    return;
                }
            }
            tx.exec("RELEASE cairn_batch");
        }
        tx.commit();
    } catch (...) {
        const std::exception_ptr failed = std::current_exception();
        for (GroupWork* w : batch) {
            if (!w->error) w->error = failed;
        }
    }
}

// ---- database -----------------------------------------------------------------------------

Database::Database(DatabaseUrl url, std::unique_ptr<detail::Pool> writers,
                   std::unique_ptr<detail::Pool> readers)
    : url_(std::move(url)),
      dialect_(url_.backend),
      writers_(std::move(writers)),
      readers_(std::move(readers)) {
    if (url_.backend == Backend::sqlite) group_ = std::make_unique<GroupCommit>(*this);
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

Result Database::exec_once(Access access, std::string_view sql, std::span<const Value> params) {
    if (group_ && access == Access::read_write) {
        return transact([&](Transaction& tx) { return tx.exec_values(sql, params); });
    }
    detail::Pool& pool = (access == Access::read_only && readers_) ? *readers_ : *writers_;
    auto conn = pool.acquire(std::chrono::seconds(30));
    return conn->get().query_once(sql, params, access);
}

std::vector<std::string> Database::analyze_grown_tables() {
    if (backend() != Backend::postgres) return {};
    // reltuples is -1 for a table never analysed. n_live_tup comes from the statistics
    // the backends report, at most a second behind. A table analysed at 100,000 rows or
    // more is autovacuum's alone: by then a plan no longer changes with its size, and
    // each ANALYZE reads a sample of 30,000 rows. Only tables this role owns, as it owns
    // what its migrations created: another application's tables are not Cairn's to touch.
    std::vector<std::string> grown;
    std::string names;
    for (auto row : read("SELECT s.relname, quote_ident(s.relname) FROM pg_stat_user_tables s "
                         "JOIN pg_class c ON c.oid = s.relid WHERE s.schemaname = "
                         "current_schema() AND c.relowner = CAST(current_user AS regrole) AND "
                         "s.n_live_tup >= 1000 AND s.n_live_tup >= 4 * c.reltuples AND "
                         "c.reltuples < 100000 ORDER BY s.relname")) {
        grown.push_back(row.get<std::string>(0));
        names += (names.empty() ? "" : ", ") + row.get<std::string>(1);
    }
    if (!grown.empty()) exec("ANALYZE " + names);
    return grown;
}

Transaction Database::begin(Access access, std::chrono::milliseconds wait) {
    detail::Pool& pool = (access == Access::read_only && readers_) ? *readers_ : *writers_;
    auto conn = pool.acquire(wait);
    conn->get().begin(access);
    return Transaction(std::move(conn), &dialect_);
}

}  // namespace cairn::storage
