#pragma once

#include <functional>
#include <memory>
#include <string>

#include "cairn/errors.hpp"
#include "engine/detail/counters.hpp"
#include "engine/detail/signals.hpp"
#include "storage/database.hpp"
#include "storage/run_store.hpp"

namespace cairn::engine::detail {

// A database failure while the engine records state. A Signal, so that workflow code's
// `catch (const std::exception&)` cannot mistake it for its own error: the execution
// ends and the run resumes elsewhere once its lease expires.
struct Infrastructure : Signal {
    std::string message;
};

// The engine's writes for runs it holds the leases of, through the database's
// WriteBatcher, so concurrent executions share commits: records (a step with its attempt,
// a run's end) share the multi-row statements of RunStore::write_runs; any other write is
// a transaction's function run behind a check of the lease. Thread-safe.
class Writer {
  public:
    Writer(storage::Database& db, storage::RunStore& store, Counters& counters);
    ~Writer();

    // Writes `w` while its lease holds; returns the run's status after the write (how a
    // worker learns of a cancellation). Throws LeaseLost or Infrastructure.
    std::string record(storage::RunWrite& w);
    // Runs `fn(tx)` in a transaction that first checks `lease` still holds; it may share a
    // commit with other writes. Throws LeaseLost, Infrastructure, or what `fn` throws.
    void fenced(const storage::Lease& lease, const std::function<void(storage::Transaction&)>& fn);

  private:
    void write(storage::BatchedWrite& w);

    storage::Database& db_;
    storage::RunStore& store_;
    Counters& counters_;
    std::unique_ptr<storage::WriteKind> records_;
};

}  // namespace cairn::engine::detail
