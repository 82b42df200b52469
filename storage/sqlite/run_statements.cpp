// SQLite's statements of the run store (detail::RunStatements). A statement costs no round
// trip here, so a batch is a few statements in one transaction: a statement per table for
// all of its rows, each text made once per row count and kept. SQLite has no UPDATE
// inside WITH, and needs no SKIP LOCKED: BEGIN IMMEDIATE already makes writers take turns.

#include "storage/detail/run_statements.hpp"

#include <fmt/format.h>

#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <unordered_map>
#include <vector>

namespace cairn::storage::detail {
namespace {

// SQLite: the text of a statement whose shape depends only on how many rows it carries,
// made once per count and kept; its parameters are numbered $1.. in row order. Formatting
// them anew for every batch would cost the writer thread, the serial path, each time.
class TextByCount {
  public:
    explicit TextByCount(std::string (*make)(std::size_t)) : make_(make) {}
    const std::string& operator()(std::size_t n) {
        std::lock_guard lock(mu_);
        if (texts_.size() <= n) texts_.resize(n + 1);
        if (!texts_[n]) texts_[n] = std::make_unique<std::string>(make_(n));
        return *texts_[n];
    }

  private:
    std::string (*make_)(std::size_t);
    std::mutex mu_;
    std::vector<std::unique_ptr<std::string>> texts_;
};

// "$first, $first+step, ..." for `count` placeholders.
std::string placeholders(std::size_t count, std::size_t first = 1, std::size_t step = 1) {
    std::string out;
    for (std::size_t i = 0; i < count; ++i)
        out += fmt::format("{}${}", i ? ", " : "", first + i * step);
    return out;
}

// "($1, ..., $width), ($width+1, ...), ..." for `rows` rows.
std::string placeholder_rows(std::size_t rows, std::size_t width) {
    std::string out;
    for (std::size_t r = 0; r < rows; ++r)
        out += fmt::format("{}({})", r ? ", " : "", placeholders(width, 1 + r * width));
    return out;
}

// " WHEN $key THEN $value ..." for `count` pairs: the keys from `key`, the values from
// `value`, each advancing by its step.
std::string when_cases(std::size_t count, std::size_t key, std::size_t key_step, std::size_t value,
                       std::size_t value_step) {
    std::string out;
    for (std::size_t i = 0; i < count; ++i)
        out += fmt::format(" WHEN ${} THEN ${}", key + i * key_step, value + i * value_step);
    return out;
}

class SqliteRunStatements final : public RunStatements {
  public:
    bool writes_alone() const override { return false; }

    bool insert_event(Transaction& tx, const NewEvent& event, const std::string& event_id,
                      std::span<const NewRun> runs, std::span<const std::string> run_ids,
                      std::int64_t now, const ClaimedBy* claimed) override {
        if (!insert_event_row(tx, event, event_id, now)) return false;
        insert_run_rows(tx, event_id, runs, run_ids, now, claimed);
        return true;
    }

    void insert_events(const Exec& /*exec*/, std::span<EventWrite* const> events) override {
        // Nothing to gain from one statement here: insert_event writes each.
        for (EventWrite* w : events) {
            w->written = false;
            w->inserted = InsertedEvent{};
            if (w->claimed) w->claimed->claims.clear();
        }
    }

    // A JSON array: the claim reads it with json_each.
    Value workflow_set(std::span<const std::string> ids) const override {
        return nlohmann::json(std::vector<std::string>(ids.begin(), ids.end())).dump();
    }

    std::vector<Lease> claim(const Exec& exec, std::string_view owner, int limit, std::int64_t now,
                             std::int64_t until, const Value& workflows) override {
        static const std::string kTake =
            "UPDATE queue SET lease_owner = $1, lease_until = $2, due_at = $2, lease_epoch = "
            "lease_epoch + 1 WHERE run_id IN (SELECT run_id FROM queue WHERE due_at <= $3 "
            "AND ($5 IS NULL OR workflow_id IS NULL OR workflow_id IN (SELECT value FROM "
            "json_each($5))) ORDER BY priority DESC, due_at, run_id LIMIT $4) "
            "RETURNING run_id, lease_epoch";
        const Value take[] = {to_value(owner), to_value(until), to_value(now), to_value(limit),
                              workflows};
        std::vector<Lease> out;
        std::vector<Value> start;  // the ids, $1..$n, then owner and now
        for (auto row : exec(kTake, take)) {
            out.push_back(Lease{row.get<std::string>(0), std::string(owner),
                                row.get<std::int64_t>(1), until});
            start.emplace_back(out.back().run_id);
        }
        if (out.empty()) return out;
        static TextByCount start_sql([](std::size_t n) {
            return fmt::format(
                "UPDATE runs SET status = 'running', worker = ${}, updated_at = ${}, "
                "started_at = COALESCE(started_at, ${}) WHERE id IN ({}) "
                "AND status NOT IN ('completed', 'failed', 'cancelled')",
                n + 1, n + 2, n + 2, placeholders(n));
        });
        const std::size_t n = start.size();
        start.push_back(to_value(owner));
        start.push_back(to_value(now));
        exec(start_sql(n), start);
        return out;
    }

    // A statement per table for all the runs; only the runs that end are written (the
    // runs that go on are changed by their steps).
    void write_runs(const Exec& exec, std::span<RunWrite* const> writes) override {
        std::vector<RunWrite*> recorded;
        const std::vector<RunWrite*> held = fence(exec, writes, recorded);
        if (held.empty()) return;
        write_steps(exec, recorded);
        write_attempts(exec, recorded);
        write_ends(exec, held);
    }

    void notify(Transaction& /*tx*/) override {}  // one process: the engine wakes its own

  private:
    // The fence of every run at once: the writes whose lease holds. A read suffices: the
    // batch's transaction began IMMEDIATE, so no other writer can move a lease (or cancel
    // a run) before it commits. The same read gives each run's status, which is how a
    // worker learns of a cancellation. `recorded` gets the held writes whose step and
    // attempt records are written: not those of a cancelled run dated after its cancel.
    static std::vector<RunWrite*> fence(const Exec& exec, std::span<RunWrite* const> writes,
                                        std::vector<RunWrite*>& recorded) {
        static TextByCount sql([](std::size_t n) {
            return fmt::format(
                "SELECT q.run_id, q.lease_owner, q.lease_epoch, r.status, r.ended_at FROM queue "
                "q JOIN runs r ON r.id = q.run_id WHERE q.run_id IN ({})",
                placeholders(n));
        });
        std::vector<Value> ids;
        for (const RunWrite* w : writes) ids.emplace_back(w->lease->run_id);
        struct Fence {
            std::optional<std::string> owner;
            std::int64_t epoch = 0;
            std::string status;
            std::optional<std::int64_t> ended_at;
        };
        std::unordered_map<std::string, Fence> leases;  // each row read once
        for (auto row : exec(sql(writes.size()), ids)) {
            leases.emplace(row.get<std::string>(0),
                           Fence{row.get_opt<std::string>(1), row.get<std::int64_t>(2),
                                 row.get<std::string>(3), row.get_opt<std::int64_t>(4)});
        }
        std::vector<RunWrite*> held;
        for (RunWrite* w : writes) {
            const auto it = leases.find(w->lease->run_id);
            if (it != leases.end() && it->second.owner == w->lease->owner &&
                it->second.epoch == w->lease->epoch) {
                w->held = true;
                w->run_status = it->second.status;
                held.push_back(w);
                if (w->run_status != run_status::kCancelled ||
                    recorded_at(*w) <= it->second.ended_at.value_or(0))
                    recorded.push_back(w);
            }
        }
        return held;
    }

    static void write_steps(const Exec& exec, std::span<RunWrite* const> held) {
        static TextByCount sql([](std::size_t n) {
            return fmt::format("INSERT INTO steps ({}) VALUES {} {}", kStepColumnList,
                               placeholder_rows(n, 15), kStepUpsert);
        });
        std::vector<Value> values;
        std::size_t n = 0;
        for (const RunWrite* w : held) {
            if (w->step == nullptr) continue;
            const StepRecord& st = *w->step;
            push(values, st.run_id, st.key, st.seq, st.kind, st.status, st.output, st.error,
                 st.attempts, st.started_at, st.ended_at, st.wake_at, changed_at(st));
            if (attempt_in_step(*w)) {
                push(values, w->attempt->generation, w->attempt->worker, w->attempt->logs);
            } else {
                values.resize(values.size() + 3);  // NULLs
            }
            ++n;
        }
        if (n > 0) exec(sql(n), values);
    }

    static void write_attempts(const Exec& exec, std::span<RunWrite* const> held) {
        static TextByCount sql([](std::size_t n) {
            return fmt::format("INSERT INTO step_attempts ({}) VALUES {}", kAttemptColumnList,
                               placeholder_rows(n, 10));
        });
        std::vector<Value> values;
        std::size_t n = 0;
        for (const RunWrite* w : held) {
            if (w->attempt == nullptr || attempt_in_step(*w)) continue;
            const AttemptRecord& at = *w->attempt;
            push(values, at.run_id, at.step_key, at.generation, at.attempt, at.started_at,
                 at.ended_at, at.outcome, at.error, at.logs, at.worker);
            ++n;
        }
        if (n > 0) exec(sql(n), values);
    }

    // The runs that end: the outcome (unless the run was cancelled meanwhile), no waits,
    // and the queue item parked (no lease, never due).
    static void write_ends(const Exec& exec, std::span<RunWrite* const> held) {
        // n ids, then (status, output, error, ended at) for each
        static TextByCount end_sql([](std::size_t n) {
            const auto cases = [n](std::size_t column) {
                return when_cases(n, 1, 1, n + column, 4);
            };
            return fmt::format(
                "UPDATE runs SET status = CASE id{} END, output = CASE id{} END, "
                "error = CASE id{} END, ended_at = CASE id{} END, updated_at = CASE id{} END "
                "WHERE id IN ({}) AND status <> 'cancelled'",
                cases(1), cases(2), cases(3), cases(4), cases(4), placeholders(n));
        });
        static TextByCount unwait_sql([](std::size_t n) {
            return fmt::format("DELETE FROM waits WHERE run_id IN ({})", placeholders(n));
        });
        static TextByCount park_sql([](std::size_t n) {
            return fmt::format(
                "UPDATE queue SET lease_owner = NULL, lease_until = NULL, due_at = NULL "
                "WHERE run_id IN ({})",
                placeholders(n));
        });
        std::vector<Value> values;
        std::vector<const RunEnd*> ends;
        for (RunWrite* w : held) {
            if (w->end == nullptr) continue;
            values.emplace_back(w->lease->run_id);
            ends.push_back(w->end);
            if (w->run_status != run_status::kCancelled) w->run_status = w->end->status;
        }
        if (ends.empty()) return;
        exec(unwait_sql(ends.size()), values);  // the ids alone
        exec(park_sql(ends.size()), values);
        for (const RunEnd* end : ends) push(values, end->status, end->output, end->error, end->at);
        exec(end_sql(ends.size()), values);
    }

    template <class... V>
    static void push(std::vector<Value>& values, const V&... v) {
        (values.push_back(to_value(v)), ...);
    }
};

}  // namespace

std::unique_ptr<RunStatements> sqlite_run_statements() {
    return std::make_unique<SqliteRunStatements>();
}

}  // namespace cairn::storage::detail
