#include "storage/run_store.hpp"

#include "storage/detail/run_statements.hpp"

namespace cairn::storage {

RunStore::RunStore(Database& db)
    : db_(db),
      sql_(db.backend() == Backend::postgres ? detail::postgres_run_statements()
                                             : detail::sqlite_run_statements()) {}

RunStore::~RunStore() = default;

bool RunStore::writes_alone() const {
    return sql_->writes_alone();
}

}  // namespace cairn::storage
