#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/periodic.hpp"
#include "storage/database.hpp"

namespace cairn::storage::detail {

class Connection;

// Keeps the planner's statistics of growing tables current on Postgres, from a thread
// of its own with a connection of its own, once a second while the database is open.
//
// A prepared statement's generic plan is made from the statistics and kept until they
// change, so a plan made while a table was nearly empty (scanning it whole) would stay
// while it grows, until autovacuum's next ANALYZE a minute or more later. So every table
// of the current schema owned by the connecting role (what its migrations created) that
// has at least 1,000 rows and four times as many as its statistics say is analysed, as
// long as those statistics saw fewer than 100,000 rows: beyond that a plan no longer
// changes with the size, and autovacuum keeps up. SQLite's planner prefers an index
// without statistics, so it needs none of this.
class StatisticsKeeper {
  public:
    explicit StatisticsKeeper(DatabaseUrl url);
    ~StatisticsKeeper();

  private:
    void check();

    const DatabaseUrl url_;
    std::unique_ptr<Connection> conn_;  // the thread's own, opened at the first check
    Periodic thread_;                   // last: started once the rest is set
};

// One check: analyses the tables that grew (see StatisticsKeeper) over `conn` and returns
// their names.
std::vector<std::string> analyze_grown_tables(Connection& conn);

}  // namespace cairn::storage::detail
