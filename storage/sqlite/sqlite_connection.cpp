// SQLite backend. sqlite3.h is included here only.
//
// Placeholders: SQL uses $1..$n as on Postgres. SQLite would read "$1" as a named
// parameter, looked up among the earlier names while parsing and again to bind it, which
// makes a batch statement with hundreds of them quadratic to prepare. So each $N is
// rewritten as ?N, SQLite's numbered form, which binds at index N (a repeated $1 too).

#include <fmt/format.h>
#include <sqlite3.h>

#include <cctype>
#include <charconv>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "common/threads.hpp"
#include "storage/detail/connection.hpp"
#include "storage/sqlite/wal_vfs.hpp"

namespace cairn::storage::detail {
namespace {

constexpr std::string_view kBackend = "sqlite";

bool is_blank(const char* p) {
    for (; *p; ++p) {
        if (*p == ';' || *p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') continue;
        if (p[0] == '-' && p[1] == '-') {  // trailing line comment
            while (*p && *p != '\n') ++p;
            if (!*p) break;
            continue;
        }
        return false;
    }
    return true;
}

// Process-wide settings, made before the first connection initialises the library (later
// they would be refused, harmlessly). Without memory statistics SQLite's allocations take no
// global mutex: with the writer and every reader connection allocating at once, that mutex
// was contended.
void configure_library() {
    static std::once_flag once;
    std::call_once(once, [] { sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); });
}

// The statement with each $N placeholder as ?N, and the highest N. Quoted strings,
// quoted identifiers and comments are copied as they are; any other parameter form
// (?, ?N, :name, @name, $name) is refused, so every parameter has a number of ours.
std::string numbered_placeholders(std::string_view sql, std::size_t& highest) {
    std::string out;
    out.reserve(sql.size());
    highest = 0;
    auto refuse = [&](std::size_t at) {
        std::size_t end = at + 1;
        while (end < sql.size() &&
               (std::isalnum(static_cast<unsigned char>(sql[end])) || sql[end] == '_'))
            ++end;
        throw StorageError(
            kBackend,
            fmt::format("placeholder '{}' is not of the form $N", sql.substr(at, end - at)), sql);
    };
    for (std::size_t i = 0; i < sql.size();) {
        const char c = sql[i];
        if (c == '\'' || c == '"') {  // a doubled quote inside is two quoted runs in a row
            const std::size_t close = sql.find(c, i + 1);
            const std::size_t end = close == std::string_view::npos ? sql.size() : close + 1;
            out.append(sql.substr(i, end - i));
            i = end;
        } else if (c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') {
            const std::size_t nl = sql.find('\n', i);
            const std::size_t end = nl == std::string_view::npos ? sql.size() : nl;
            out.append(sql.substr(i, end - i));
            i = end;
        } else if (c == '/' && i + 1 < sql.size() && sql[i + 1] == '*') {
            const std::size_t close = sql.find("*/", i + 2);
            const std::size_t end = close == std::string_view::npos ? sql.size() : close + 2;
            out.append(sql.substr(i, end - i));
            i = end;
        } else if (c == '$' && i > 0 &&
                   (std::isalnum(static_cast<unsigned char>(sql[i - 1])) || sql[i - 1] == '_' ||
                    sql[i - 1] == '$')) {
            out += c;  // inside an identifier (a$1), as both SQLite and Postgres read it
            ++i;
        } else if (c == '$') {
            std::size_t n = 0;
            const auto [next, ec] = std::from_chars(sql.data() + i + 1, sql.data() + sql.size(), n);
            if (ec != std::errc{} || n == 0 ||
                (next < sql.data() + sql.size() &&
                 (std::isalpha(static_cast<unsigned char>(*next)) || *next == '_')))
                refuse(i);
            out += '?';
            out.append(sql.data() + i + 1, next);
            highest = std::max(highest, n);
            i = static_cast<std::size_t>(next - sql.data());
        } else if (c == '?' || c == ':' || c == '@') {
            refuse(i);
        } else {
            out += c;
            ++i;
        }
    }
    return out;
}

}  // namespace

// SQLite checkpoints a WAL database in the commit that takes the WAL past 1,000 pages:
// that commit copies the pages into the database file and syncs both files, while every
// writer waits (the p99 of a one-at-a-time run was ten times its p90). Here the writer's
// commits only signal this thread, which runs passive checkpoints on its own connection
// beside the writer. The WAL restarts from its beginning only once every frame has been
// copied, which a checkpoint beside a busy writer rarely achieves; so at twice the size the
// writer checkpoints itself, as SQLite would, once a pass of the thread in progress ends.
// By then the thread has copied most frames, so that pass is short, and the WAL stays
// bounded either way.
//
// The WAL is let grow to 10,000 pages (40 MB at 4 KiB) before a checkpoint, not SQLite's
// 1,000: the pages written most (the last leaf of each index, the tables' ends) are copied
// once per checkpoint however often they were rewritten, so fewer checkpoints copy and sync
// less (docs/storage.md).
class WalCheckpointer {
  public:
    static constexpr int kPages = 10'000;        // the thread checkpoints
    static constexpr int kInlinePages = 20'000;  // the writer checkpoints itself

    explicit WalCheckpointer(const DatabaseUrl& url)
        : path_(url.path),
          synchronous_(url.synchronous),
          busy_timeout_ms_(url.busy_timeout_ms),
          thread_([this] { loop(); }) {}

    ~WalCheckpointer() {
        {
            std::lock_guard lock(mu_);
            stop_ = true;
        }
        cv_.notify_one();
        idle_.notify_all();
        thread_.join();
    }

    WalCheckpointer(const WalCheckpointer&) = delete;
    WalCheckpointer& operator=(const WalCheckpointer&) = delete;

    // sqlite3_wal_hook: called by the writer after each commit with the WAL's size.
    static int on_commit(void* self, sqlite3* writer, const char* schema, int wal_pages) {
        auto* checkpointer = static_cast<WalCheckpointer*>(self);
        if (wal_pages >= kInlinePages) {
            // A pass of the thread in progress would make this one return SQLITE_BUSY at
            // once, and the WAL would grow on; let it finish, then copy the rest.
            checkpointer->wait_idle();
            sqlite3_wal_checkpoint_v2(writer, schema, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
        } else if (wal_pages >= kPages) {
            checkpointer->wake();
        }
        return SQLITE_OK;
    }

  private:
    void wait_idle() {
        std::unique_lock lock(mu_);
        idle_.wait(lock, [this] { return !due_ || stop_; });
    }

    void wake() {
        {
            std::lock_guard lock(mu_);
            if (due_) return;
            due_ = true;
        }
        cv_.notify_one();
    }

    void loop() {
        name_this_thread("cairn-checkpt");
        set_batch_scheduling(false);  // opened with a writer connection, on any thread
        sqlite3* db = nullptr;
        for (;;) {
            {
                std::unique_lock lock(mu_);
                cv_.wait(lock, [this] { return due_ || stop_; });
                if (stop_) break;
            }
            if (db == nullptr) db = open();
            // PASSIVE copies what no reader still needs and never blocks the writer. A
            // failure (the file gone, another process checkpointing) leaves the WAL to
            // the next signal, or to the writer's own checkpoint.
            if (db != nullptr) {
                sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
            }
            {
                std::lock_guard lock(mu_);
                due_ = false;
            }
            idle_.notify_all();
        }
        if (db != nullptr) sqlite3_close_v2(db);
    }

    sqlite3* open() const {
        sqlite3* db = nullptr;
        configure_library();
        if (sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                            sqlite::wal_vfs_name()) != SQLITE_OK) {
            sqlite3_close_v2(db);
            return nullptr;
        }
        sqlite3_busy_timeout(db, busy_timeout_ms_);
        // The checkpoint syncs the files as the writer's setting says.
        const std::string pragma = fmt::format("PRAGMA synchronous={}", synchronous_);
        sqlite3_exec(db, pragma.c_str(), nullptr, nullptr, nullptr);
        return db;
    }

    const std::string path_;
    const std::string synchronous_;
    const int busy_timeout_ms_;
    std::mutex mu_;
    std::condition_variable cv_;    // wakes the thread
    std::condition_variable idle_;  // the thread finished a pass
    bool due_ = false;              // guarded by mu_: a pass was asked for and has not finished
    bool stop_ = false;             // guarded by mu_
    std::thread thread_;            // last: starts once the members above exist
};

namespace {

class SqliteConnection final : public Connection {
  public:
    SqliteConnection(const DatabaseUrl& url, Access access,
                     std::shared_ptr<WalCheckpointer> checkpointer)
        : checkpointer_(std::move(checkpointer)) {
        configure_library();
        int flags = SQLITE_OPEN_NOMUTEX;  // the pool gives each connection to one thread at a time
        flags |= access == Access::read_only && url.path != ":memory:"
                     ? SQLITE_OPEN_READONLY
                     : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
        // The default VFS but for one write per commit to the WAL (wal_vfs.hpp).
        const int rc = sqlite3_open_v2(url.path.c_str(), &db_, flags, sqlite::wal_vfs_name());
        if (rc != SQLITE_OK) {
            std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
            sqlite3_close_v2(db_);
            db_ = nullptr;
            throw ConnectionError(kBackend, fmt::format("cannot open '{}': {}", url.path, msg));
        }
        sqlite3_extended_result_codes(db_, 1);
        sqlite3_busy_timeout(db_, url.busy_timeout_ms);
        try {
            if (access == Access::read_write) {
                // WAL lets readers run beside the writer. NORMAL syncs the WAL at checkpoints
                // only: a power cut may lose the last commits but never corrupts the file;
                // synchronous=full in the URL syncs every commit (docs/storage.md).
                exec_simple("PRAGMA journal_mode=WAL");
                exec_simple(fmt::format("PRAGMA synchronous={}", url.synchronous));
                // Group commit runs each transaction of a batch in a savepoint, whose
                // journal would otherwise go to a temporary file.
                exec_simple("PRAGMA temp_store=MEMORY");
                // Replaces SQLite's checkpoint-in-the-commit (see WalCheckpointer).
                if (checkpointer_) {
                    sqlite3_wal_hook(db_, &WalCheckpointer::on_commit, checkpointer_.get());
                }
            } else {
                exec_simple("PRAGMA query_only=1");
            }
            exec_simple("PRAGMA foreign_keys=ON");
        } catch (const StorageError& e) {
            close();
            throw ConnectionError(kBackend,
                                  fmt::format("cannot open '{}': {}", url.path, e.message()));
        }
    }

    ~SqliteConnection() override { close(); }

    void begin(Access access) override {
        // IMMEDIATE takes the write lock up front, so two writers never deadlock upgrading.
        exec_simple(access == Access::read_write ? "BEGIN IMMEDIATE" : "BEGIN");
    }
    void commit() override { exec_simple("COMMIT"); }
    void rollback() override {
        if (sqlite3_get_autocommit(db_) == 0) exec_simple("ROLLBACK");
    }
    bool healthy() const override { return db_ != nullptr; }

    Result query_once(std::string_view sql, std::span<const Value> params, Access access) override {
        // A statement outside BEGIN is a read transaction of its own. Writes keep BEGIN
        // IMMEDIATE, which takes the write lock before reading (no upgrade to fail).
        if (access == Access::read_only) return query(sql, params);
        return Connection::query_once(sql, params, access);
    }

    void script(std::string_view sql) override {
        char* err = nullptr;
        const std::string text(sql);
        const int rc = sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &err);
        if (rc != SQLITE_OK) {
            std::string msg = err ? err : sqlite3_errstr(rc);
            sqlite3_free(err);
            fail(rc, msg, sql);
        }
    }

    Result query(std::string_view sql, std::span<const Value> params) override {
        const Prepared& prepared = prepare(sql);
        sqlite3_stmt* stmt = prepared.stmt;
        // Always leave the statement reset and unbound, also when binding or stepping throws.
        struct Reset {
            sqlite3_stmt* s;
            ~Reset() {
                sqlite3_reset(s);
                sqlite3_clear_bindings(s);
            }
        } reset{stmt};

        bind(prepared, sql, params);
        const int ncols = sqlite3_column_count(stmt);
        std::vector<std::string> columns;
        columns.reserve(static_cast<std::size_t>(ncols));
        for (int i = 0; i < ncols; ++i) columns.emplace_back(sqlite3_column_name(stmt, i));
        Result result{std::string(kBackend), std::move(columns)};

        for (;;) {
            const int rc = sqlite3_step(stmt);
            if (rc == SQLITE_DONE) break;
            if (rc != SQLITE_ROW) fail(rc, sqlite3_errmsg(db_), sql);
            for (int i = 0; i < ncols; ++i) {
                switch (sqlite3_column_type(stmt, i)) {
                    case SQLITE_INTEGER:
                        result.push(static_cast<std::int64_t>(sqlite3_column_int64(stmt, i)));
                        break;
                    case SQLITE_FLOAT:
                        result.push(sqlite3_column_double(stmt, i));
                        break;
                    case SQLITE_NULL:
                        result.push(std::monostate{});
                        break;
                    default: {  // TEXT and BLOB
                        const auto* p = static_cast<const char*>(sqlite3_column_blob(stmt, i));
                        const int n = sqlite3_column_bytes(stmt, i);
                        result.push(std::string(p ? p : "", static_cast<std::size_t>(n)));
                    }
                }
            }
        }
        result.set_affected(sqlite3_stmt_readonly(stmt) ? 0 : sqlite3_changes64(db_));
        return result;
    }

  private:
    void close() {
        for (auto& [sql, p] : statements_) sqlite3_finalize(p.stmt);
        statements_.clear();
        if (db_) sqlite3_close_v2(db_);
        db_ = nullptr;
    }

    void exec_simple(const std::string& sql) { script(sql); }

    // A cached statement and the highest N of its placeholders, ?1..?N.
    struct Prepared {
        sqlite3_stmt* stmt = nullptr;
        std::size_t highest = 0;
    };

    // Prepared statements are cached per connection by their text as given.
    const Prepared& prepare(std::string_view sql) {
        if (auto it = statements_.find(sql); it != statements_.end()) return it->second;
        std::string key(sql);
        Prepared p;
        const std::string text = numbered_placeholders(sql, p.highest);
        const char* tail = nullptr;
        const int rc = sqlite3_prepare_v3(db_, text.c_str(), static_cast<int>(text.size()),
                                          SQLITE_PREPARE_PERSISTENT, &p.stmt, &tail);
        if (rc != SQLITE_OK) fail(rc, sqlite3_errmsg(db_), sql);
        if (p.stmt == nullptr) throw StorageError(kBackend, "empty statement", sql);
        struct Finalize {
            sqlite3_stmt*& s;
            ~Finalize() {
                if (s) sqlite3_finalize(s);
            }
        } guard{p.stmt};
        if (tail && !is_blank(tail)) {
            throw StorageError(kBackend, "exec() runs one statement; use exec_script() for several",
                               sql);
        }
        // Every parameter is one of ours (numbered_placeholders refused the other forms).
        if (static_cast<std::size_t>(sqlite3_bind_parameter_count(p.stmt)) != p.highest) {
            throw StorageError(kBackend, "a parameter is not of the form $N", sql);
        }
        auto& cached = statements_.emplace(std::move(key), std::move(p)).first->second;
        p.stmt = nullptr;  // the cache owns the statement now
        return cached;
    }

    void bind(const Prepared& p, std::string_view sql, std::span<const Value> params) {
        // Match Postgres, which insists on exactly as many parameters as the highest $N.
        if (p.highest != params.size()) {
            throw StorageError(kBackend,
                               fmt::format("statement uses {} parameters but {} were given",
                                           p.highest, params.size()),
                               sql);
        }
        sqlite3_stmt* stmt = p.stmt;
        for (std::size_t k = 0; k < params.size(); ++k) {
            const int i = static_cast<int>(k) + 1;  // ?N binds at index N
            const Value& v = params[k];
            int rc = SQLITE_OK;
            if (std::holds_alternative<std::monostate>(v)) {
                rc = sqlite3_bind_null(stmt, i);
            } else if (auto* iv = std::get_if<std::int64_t>(&v)) {
                rc = sqlite3_bind_int64(stmt, i, *iv);
            } else if (auto* dv = std::get_if<double>(&v)) {
                rc = sqlite3_bind_double(stmt, i, *dv);
            } else if (auto* bv = std::get_if<bool>(&v)) {
                rc = sqlite3_bind_int(stmt, i, *bv ? 1 : 0);
            } else {
                const auto& s = std::get<std::string>(v);
                rc =
                    sqlite3_bind_text64(stmt, i, s.data(), s.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
            }
            if (rc != SQLITE_OK) fail(rc, sqlite3_errmsg(db_), sql);
        }
    }

    [[noreturn]] void fail(int rc, std::string_view message, std::string_view sql) {
        switch (rc) {
            case SQLITE_CONSTRAINT_UNIQUE:
            case SQLITE_CONSTRAINT_PRIMARYKEY:
                throw UniqueViolation(kBackend, message, sql);
            case SQLITE_CONSTRAINT_FOREIGNKEY:
            case SQLITE_CONSTRAINT_NOTNULL:
            case SQLITE_CONSTRAINT_CHECK:
                throw ConstraintViolation(kBackend, message, sql);
            default:
                break;
        }
        switch (rc & 0xff) {
            case SQLITE_BUSY:
            case SQLITE_LOCKED:
                throw TransactionConflict(kBackend, message, sql);
            case SQLITE_CONSTRAINT:
                throw ConstraintViolation(kBackend, message, sql);
            case SQLITE_CANTOPEN:
            case SQLITE_IOERR:
            case SQLITE_CORRUPT:
            case SQLITE_NOTADB:
            case SQLITE_FULL:
                throw ConnectionError(kBackend, message, sql);
            default:
                throw StorageError(kBackend, message, sql);
        }
    }

    std::shared_ptr<WalCheckpointer> checkpointer_;  // outlives db_, whose hook points to it
    sqlite3* db_ = nullptr;
    // Looked up by string_view: a batch's statement text runs to kilobytes, and a lookup
    // should not copy it.
    struct TextHash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const noexcept {
            return std::hash<std::string_view>{}(s);
        }
    };
    std::unordered_map<std::string, Prepared, TextHash, std::equal_to<>> statements_;
};

}  // namespace

std::shared_ptr<WalCheckpointer> start_wal_checkpointer(const DatabaseUrl& url) {
    return std::make_shared<WalCheckpointer>(url);
}

std::unique_ptr<Connection> connect_sqlite(const DatabaseUrl& url, Access access,
                                           std::shared_ptr<WalCheckpointer> checkpointer) {
    return std::make_unique<SqliteConnection>(url, access, std::move(checkpointer));
}

}  // namespace cairn::storage::detail
