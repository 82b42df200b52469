#include "engine/detail/writer.hpp"

#include <vector>

namespace cairn::engine::detail {

namespace {

struct RecordWrite;

// Records of several runs share RunStore::write_runs's statements: on Postgres one that
// commits on its own.
class RecordKind final : public storage::WriteKind {
  public:
    explicit RecordKind(storage::RunStore& store) : store_(store) {}
    void write(storage::Transaction& tx, std::span<storage::BatchedWrite* const> writes,
               std::size_t /*batch_size*/) const override {
        const auto runs = of(writes);
        store_.write_runs(tx, runs);
    }
    bool commits_alone(const storage::Database& /*db*/) const override {
        return store_.writes_alone();
    }
    void write_alone(storage::Database& /*db*/,
                     std::span<storage::BatchedWrite* const> writes) const override {
        const auto runs = of(writes);
        store_.write_runs(runs);
    }

  private:
    static std::vector<storage::RunWrite*> of(std::span<storage::BatchedWrite* const> writes);
    storage::RunStore& store_;
};

struct RecordWrite final : storage::BatchedWrite {
    RecordWrite(const RecordKind& kind, storage::RunWrite& w) : BatchedWrite(kind), run(&w) {}
    storage::RunWrite* run;
};

std::vector<storage::RunWrite*> RecordKind::of(std::span<storage::BatchedWrite* const> writes) {
    std::vector<storage::RunWrite*> runs;
    runs.reserve(writes.size());
    for (storage::BatchedWrite* w : writes) runs.push_back(static_cast<RecordWrite*>(w)->run);
    return runs;
}

}  // namespace

Writer::Writer(storage::Database& db, storage::RunStore& store, Counters& counters)
    : db_(db), store_(store), counters_(counters), records_(std::make_unique<RecordKind>(store)) {}

Writer::~Writer() = default;

void Writer::write(storage::BatchedWrite& w) {
    // A conflict (a deadlock, a busy database) wrote nothing: try again, a few times.
    constexpr int kAttempts = 3;
    for (int attempt = 1;; ++attempt) {
        db_.writes().write(w);
        if (!w.error) return;
        try {
            std::rethrow_exception(w.error);
        } catch (const storage::TransactionConflict& e) {
            if (attempt == kAttempts) throw Infrastructure{{}, e.what()};
        } catch (const storage::StorageError& e) {
            throw Infrastructure{{}, e.what()};
        }
    }
}

std::string Writer::record(storage::RunWrite& w) {
    RecordWrite item(static_cast<const RecordKind&>(*records_), w);
    write(item);
    if (!w.held) {
        ++counters_.leases_lost;
        throw LeaseLost{};
    }
    return w.run_status;
}

void Writer::fenced(const storage::Lease& lease,
                    const std::function<void(storage::Transaction&)>& fn) {
    bool held = false;
    const std::function<void(storage::Transaction&)> behind_fence = [&](storage::Transaction& tx) {
        held = store_.hold_fence(tx, lease);
        if (held) fn(tx);
    };
    storage::TransactionWrite item(behind_fence);
    write(item);
    if (!held) {
        ++counters_.leases_lost;
        throw LeaseLost{};
    }
}

}  // namespace cairn::engine::detail
