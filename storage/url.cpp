// Database URLs (parse_database_url), the dialect and the text of storage errors.

#include <fmt/format.h>

#include <cctype>
#include <charconv>

#include "storage/database.hpp"

namespace cairn::storage {

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

std::string_view to_string(Backend backend) {
    return backend == Backend::sqlite ? "sqlite" : "postgres";
}

std::string_view Dialect::migration_lock() const {
    // Any fixed 64-bit key works; this one spells "cairn" in ASCII.
    // It also lifts the statement timeout for the transaction: an index built over a large
    // table may take longer than any request should.
    return backend_ == Backend::postgres ? "SELECT pg_advisory_xact_lock(435610234222), "
                                           "set_config('statement_timeout', '0', true)"
                                         : "";
}

std::string_view Dialect::lock_rows() const {
    return backend_ == Backend::postgres ? " FOR UPDATE" : "";
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

// Applies option `key`=`value` of a database URL to `out`; options Cairn does not know
// are passed on to libpq (Postgres) or refused (SQLite).
void apply_option(DatabaseUrl& out, std::string_view key, std::string_view value,
                  std::string& passthrough, std::string_view pair) {
    if (key == "pool") {
        out.pool_size = parse_positive(key, value, 256);
    } else if (out.backend == Backend::sqlite && key == "synchronous") {
        std::string v = lower(value);
        if (v != "normal" && v != "full") {
            throw ConfigError(
                fmt::format("database URL option synchronous={} must be normal or full", value));
        }
        out.synchronous = v == "full" ? "FULL" : "NORMAL";
    } else if (out.backend == Backend::sqlite && key == "busy_timeout_ms") {
        out.busy_timeout_ms = parse_positive(key, value, 600000);
    } else if (out.backend == Backend::postgres && key == "idle_tx_timeout_ms") {
        out.idle_tx_timeout_ms = parse_positive(key, value, 86'400'000);
    } else if (out.backend == Backend::postgres && key == "statement_timeout_ms") {
        out.statement_timeout_ms = value == "0" ? 0 : parse_positive(key, value, 86'400'000);
    } else if (out.backend == Backend::postgres && key == "random_page_cost") {
        double cost = 0;
        auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), cost);
        if (ec != std::errc{} || end != value.data() + value.size() || !(cost > 0) || cost > 1000) {
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
        apply_option(out, pair.substr(0, eq), pair.substr(eq + 1), passthrough, pair);
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

}  // namespace cairn::storage
