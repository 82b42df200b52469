// Postgres backend over libpqxx 6.4. pqxx headers are included here only.
//
// Every parameterised statement is prepared once per connection (named by a counter and
// cached by its text) and executed with exec_prepared, so Postgres plans it once.

#include <fmt/format.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <thread>
#include <unordered_map>

#include "common/threads.hpp"
#include "storage/detail/connection.hpp"

namespace cairn::storage::detail {
namespace {

constexpr std::string_view kBackend = "postgres";

// A server that does not answer should not hang a caller, or a shutdown, for the minutes
// the kernel takes to give up on a connection: 5 s unless the URL says otherwise.
std::string with_default_timeout(const std::string& url) {
    if (url.find("connect_timeout=") != std::string::npos) return url;
    return url + (url.find('?') == std::string::npos ? "?" : "&") + "connect_timeout=5";
}

class PostgresConnection final : public Connection {
  public:
    explicit PostgresConnection(const DatabaseUrl& url) {
        try {
            conn_ = std::make_unique<pqxx::connection>(with_default_timeout(url.path));
            pqxx::nontransaction(*conn_).exec(fmt::format(
                "SET idle_in_transaction_session_timeout = {}; SET random_page_cost = {}; "
                "SET statement_timeout = {}",
                url.idle_tx_timeout_ms, url.random_page_cost, url.statement_timeout_ms));
        } catch (const std::exception& e) {
            throw ConnectionError(kBackend, fmt::format("cannot connect to {}: {}", url.redacted,
                                                        first_line(e.what())));
        }
    }

    void begin(Access access) override {
        guard("BEGIN", [&] {
            if (access == Access::read_only) {
                tx_ = std::make_unique<pqxx::read_transaction>(*conn_);
            } else {
                tx_ = std::make_unique<pqxx::work>(*conn_);
            }
        });
    }

    void commit() override {
        if (!tx_) throw StorageError(kBackend, "COMMIT without a transaction");
        try {
            guard("COMMIT", [&] { tx_->commit(); });
        } catch (...) {
            tx_.reset();
            throw;
        }
        tx_.reset();
    }

    void rollback() override {
        if (!tx_) return;
        try {
            tx_->abort();
        } catch (...) {
            broken_ = true;
        }
        tx_.reset();
    }

    bool healthy() const override { return !broken_ && conn_ && conn_->is_open(); }

    void script(std::string_view sql) override {
        need_tx(sql);
        guard(sql, [&] { tx_->exec(std::string(sql)); });
    }

    Result query(std::string_view sql, std::span<const Value> params) override {
        need_tx(sql);
        return run(*tx_, sql, params);
    }

    Result query_once(std::string_view sql, std::span<const Value> params, Access) override {
        if (tx_) throw StorageError(kBackend, "statement on its own inside a transaction", sql);
        std::optional<pqxx::nontransaction> alone;
        guard(sql, [&] { alone.emplace(*conn_); });
        return run(*alone, sql, params);
    }

  private:
    Result run(pqxx::transaction_base& tx, std::string_view sql, std::span<const Value> params) {
        const std::string& name = prepared_name(sql);

        // Parameters go as text; Postgres infers each one's type from the statement.
        std::vector<std::string> texts(params.size());
        std::vector<const char*> ptrs(params.size(), nullptr);
        for (std::size_t i = 0; i < params.size(); ++i) {
            const Value& v = params[i];
            if (std::holds_alternative<std::monostate>(v)) continue;
            if (auto* iv = std::get_if<std::int64_t>(&v)) {
                texts[i] = std::to_string(*iv);
            } else if (auto* dv = std::get_if<double>(&v)) {
                texts[i] = fmt::format("{}", *dv);  // shortest text that reads back exactly
                if (texts[i] == "inf") texts[i] = "Infinity";
                if (texts[i] == "-inf") texts[i] = "-Infinity";
                if (texts[i] == "nan") texts[i] = "NaN";
            } else if (auto* bv = std::get_if<bool>(&v)) {
                texts[i] = *bv ? "true" : "false";
            } else {
                texts[i] = std::get<std::string>(v);
                if (texts[i].find('\0') != std::string::npos) {
                    throw StorageError(
                        kBackend, fmt::format("parameter ${} contains a NUL byte", i + 1), sql);
                }
            }
            ptrs[i] = texts[i].c_str();
        }

        pqxx::result r;
        guard(sql, [&] { r = tx.exec_prepared(name, pqxx::prepare::make_dynamic_params(ptrs)); });

        std::vector<std::string> columns;
        const auto ncols = static_cast<std::size_t>(r.columns());
        columns.reserve(ncols);
        for (pqxx::row::size_type i = 0; i < r.columns(); ++i)
            columns.emplace_back(r.column_name(i));
        Result result{std::string(kBackend), std::move(columns)};
        for (const auto& row : r) {
            for (const auto& field : row) {
                if (field.is_null()) {
                    result.push(std::monostate{});
                } else {
                    result.push(std::string(field.c_str(), field.size()));
                }
            }
        }
        result.set_affected(static_cast<std::int64_t>(r.affected_rows()));
        return result;
    }

    static std::string first_line(std::string_view text) {
        auto nl = text.find('\n');
        return std::string(text.substr(0, nl));
    }

    void need_tx(std::string_view sql) const {
        if (!tx_) throw StorageError(kBackend, "statement outside a transaction", sql);
    }

    const std::string& prepared_name(std::string_view sql) {
        std::string key(sql);
        auto it = prepared_.find(key);
        if (it != prepared_.end()) return it->second;
        std::string name = fmt::format("cairn_{}", prepared_.size() + 1);
        conn_->prepare(name, key);
        return prepared_.emplace(std::move(key), std::move(name)).first->second;
    }

    // Runs `fn`, translating pqxx exceptions into the typed storage errors.
    template <class Fn>
    void guard(std::string_view sql, Fn&& fn) {
        try {
            fn();
        } catch (const pqxx::unique_violation& e) {
            throw UniqueViolation(kBackend, first_line(e.what()), sql);
        } catch (const pqxx::integrity_constraint_violation& e) {
            throw ConstraintViolation(kBackend, first_line(e.what()), sql);
        } catch (const pqxx::transaction_rollback& e) {
            throw TransactionConflict(kBackend, first_line(e.what()), sql);
        } catch (const pqxx::in_doubt_error& e) {
            broken_ = true;
            throw ConnectionError(kBackend,
                                  fmt::format("connection lost during commit; outcome unknown: {}",
                                              first_line(e.what())),
                                  sql);
        } catch (const pqxx::broken_connection& e) {
            broken_ = true;
            throw ConnectionError(kBackend, first_line(e.what()), sql);
        } catch (const pqxx::sql_error& e) {
            throw StorageError(kBackend, first_line(e.what()), sql);
        } catch (const StorageError&) {
            throw;
        } catch (const std::exception& e) {
            if (conn_ && !conn_->is_open()) broken_ = true;
            throw StorageError(kBackend, first_line(e.what()), sql);
        }
    }

    std::unique_ptr<pqxx::connection> conn_;
    std::unique_ptr<pqxx::dbtransaction> tx_;
    std::unordered_map<std::string, std::string> prepared_;  // SQL text -> statement name
    bool broken_ = false;
};

// LISTENs on its own connection in a background thread; reconnects after a failure.
class PostgresListener final : public Listener {
  public:
    PostgresListener(const DatabaseUrl& url, std::string channel, Database::OnNotify on_notify)
        : url_(url), channel_(std::move(channel)), on_notify_(std::move(on_notify)) {
        thread_ = std::thread([this] { loop(); });
    }
    ~PostgresListener() override {
        stop_ = true;
        thread_.join();
    }

  private:
    class Receiver final : public pqxx::notification_receiver {
      public:
        Receiver(pqxx::connection_base& c, const std::string& channel, const Database::OnNotify& fn)
            : pqxx::notification_receiver(c, channel), fn_(fn) {}
        void operator()(const std::string& payload, int) override { fn_(payload); }

      private:
        const Database::OnNotify& fn_;
    };

    void loop() {
        name_this_thread("cairn-listen");
        while (!stop_) {
            try {
                pqxx::connection conn(with_default_timeout(url_.path));
                Receiver receiver(conn, channel_, on_notify_);
                on_notify_({});  // anything sent while we were not listening is due now
                while (!stop_) conn.await_notification(0, 200'000);
            } catch (const std::exception& e) {
                if (stop_) break;
                // Back off and reconnect; the pollers keep the engine going meanwhile.
                for (int i = 0; i < 10 && !stop_; ++i)
                    std::this_thread::sleep_for(std::chrono::milliseconds(100));
            }
        }
    }

    DatabaseUrl url_;
    std::string channel_;
    Database::OnNotify on_notify_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
};

// Sends the notifications a Notifier is asked for, one at a time and at least kGap apart,
// from a thread started by the first request. The connection commits asynchronously: a
// notification is a hint (workers also poll), so it need not wait for a WAL flush, and a
// flush here would hold Postgres's notify lock the whole time.
class PostgresNotifier final : public Notifier {
  public:
    // Each notification is a transaction, and every listener's backend and process wake
    // for it; under a stream of sends, one per event cost about a tenth of the machine.
    static constexpr auto kGap = std::chrono::milliseconds(10);

    PostgresNotifier(const DatabaseUrl& url, std::string channel, std::string payload)
        : url_(url), channel_(std::move(channel)), payload_(std::move(payload)) {}
    ~PostgresNotifier() override {
        {
            std::lock_guard lock(mu_);
            stop_ = true;
        }
        cv_.notify_one();
        if (thread_.joinable()) thread_.join();
    }

    void notify() override {
        {
            std::lock_guard lock(mu_);
            pending_ = true;
            if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
        }
        cv_.notify_one();
    }

  private:
    void loop() {
        name_this_thread("cairn-notify");
        set_batch_scheduling(false);  // started by whichever thread notified first
        std::unique_ptr<pqxx::connection> conn;
        std::unique_lock lock(mu_);
        auto next = std::chrono::steady_clock::now();  // the earliest the next may go
        while (true) {
            // A request made before stop() is still sent.
            cv_.wait(lock, [&] { return pending_ || stop_; });
            if (!pending_) return;
            cv_.wait_until(lock, next, [&] { return stop_; });
            pending_ = false;
            lock.unlock();
            bool sent = false;
            try {
                if (!conn) {
                    conn = std::make_unique<pqxx::connection>(with_default_timeout(url_.path));
                    pqxx::nontransaction(*conn).exec("SET synchronous_commit = off");
                }
                pqxx::nontransaction tx(*conn);
                tx.exec_params("SELECT pg_notify($1, $2)", channel_, payload_);
                sent = true;
                next = std::chrono::steady_clock::now() + kGap;
            } catch (const std::exception&) {
                conn.reset();  // reconnect for the next one
            }
            lock.lock();
            if (!sent && !stop_) {
                // Retry once the database may be back; the pollers keep workers going.
                pending_ = true;
                cv_.wait_for(lock, std::chrono::seconds(1), [&] { return stop_; });
            }
            if (stop_ && !sent) return;
        }
    }

    DatabaseUrl url_;
    std::string channel_;
    std::string payload_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool pending_ = false;
    bool stop_ = false;
    std::thread thread_;
};

}  // namespace

std::unique_ptr<Notifier> notifier_postgres(const DatabaseUrl& url, std::string channel,
                                            std::string payload) {
    return std::make_unique<PostgresNotifier>(url, std::move(channel), std::move(payload));
}

std::unique_ptr<Listener> listen_postgres(const DatabaseUrl& url, std::string channel,
                                          Database::OnNotify on_notify) {
    return std::make_unique<PostgresListener>(url, std::move(channel), std::move(on_notify));
}

std::unique_ptr<Connection> connect_postgres(const DatabaseUrl& url) {
    return std::make_unique<PostgresConnection>(url);
}

}  // namespace cairn::storage::detail
