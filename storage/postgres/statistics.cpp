#include "storage/postgres/statistics.hpp"

#include <chrono>
#include <memory>

#include "storage/detail/connection.hpp"

namespace cairn::storage::detail {

std::vector<std::string> analyze_grown_tables(Connection& conn) {
    // reltuples is -1 for a table never analysed. n_live_tup comes from the statistics
    // the backends report, at most a second behind.
    std::vector<std::string> grown;
    std::string names;
    const auto rows = conn.query_once(
        "SELECT s.relname, quote_ident(s.relname) FROM pg_stat_user_tables s "
        "JOIN pg_class c ON c.oid = s.relid WHERE s.schemaname = current_schema() AND "
        "c.relowner = CAST(current_user AS regrole) AND s.n_live_tup >= 1000 AND "
        "s.n_live_tup >= 4 * c.reltuples AND c.reltuples < 100000 ORDER BY s.relname",
        {}, Access::read_only);
    for (auto row : rows) {
        grown.push_back(row.get<std::string>(0));
        names += (names.empty() ? "" : ", ") + row.get<std::string>(1);
    }
    if (!grown.empty()) conn.query_once("ANALYZE " + names, {}, Access::read_write);
    return grown;
}

StatisticsKeeper::StatisticsKeeper(DatabaseUrl url)
    : url_(std::move(url)), thread_("cairn-stats", std::chrono::seconds(1), [this] { check(); }) {}

StatisticsKeeper::~StatisticsKeeper() = default;

void StatisticsKeeper::check() {
    try {
        if (!conn_ || !conn_->healthy()) conn_ = connect_postgres(url_);
        analyze_grown_tables(*conn_);
    } catch (const std::exception&) {
        conn_.reset();  // the database is away: try again at the next check
    }
}

}  // namespace cairn::storage::detail
