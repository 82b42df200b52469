#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "cairn/context.hpp"
#include "cairn/workflow.hpp"
#include "engine/detail/runtime.hpp"
#include "storage/records.hpp"

namespace cairn::engine::detail {

// Sets what Context::attempt() returns on a parallel branch's thread.
void set_branch_attempt(int n);

// One execution (one claim) of one run, behind a Context: replays the workflow function,
// returning recorded results and recording new operations behind the run's lease.
//
// The durable operations (operations.cpp) each take the next slot of the run's record,
// in order; a replay that asks for another operation than was recorded there fails as
// non-deterministic. Used by one thread.
class Execution {
  public:
    Execution(Runtime& rt, Held held, storage::RunState state, const Workflow& wf);

    // Runs the workflow function to its end or its next suspension, recording the outcome.
    void run();

    // ---- the durable operations (operations.cpp), behind Context --------------------------
    json run_step(std::string_view name, const std::function<json()>& fn,
                  const std::function<json(storage::Transaction&)>* in_tx,
                  const StepOptions& options);
    void sleep_until(std::string_view name, std::int64_t until);
    std::optional<json> wait_for_event(std::string_view name, std::string_view event_name,
                                       std::string_view match_field,
                                       std::chrono::milliseconds timeout,
                                       std::string_view expression = {});
    std::string send_event(std::string_view name, const json& event);
    json invoke(std::string_view name, std::string_view workflow_id, const json& data,
                std::optional<std::chrono::milliseconds> timeout);
    // Steps run at once (parallel.cpp): returns {name: output} once every branch completed;
    // StepFailed for the first (in order) that failed for good, once the others ended.
    json parallel(std::span<const std::pair<std::string, std::function<json()>>> branches,
                  const StepOptions& options);

    const std::string& run_id() const { return state_.run.id; }
    const json& event() const { return event_; }
    // A batch run's events (read on first use), or [event()].
    const json& events();
    int attempt() const;
    std::vector<Context::Recorded> history() const;
    void log(std::string_view line);
    std::int64_t now() const { return rt_.now(); }

  private:
    // An operation's place in the run: its key (the name, with a counter when repeated),
    // its position, and what was recorded there (null when new).
    struct Slot {
        std::string key;
        std::int64_t seq;
        storage::StepRecord* stored;
    };
    // A step in a transaction that ran past its timeout: its writes are rolled back.
    struct TimedOut {};
    // What a failed attempt's exception says: its error ({type, message}), whether it may
    // be retried, and after how long when it said.
    struct Failure {
        json error;
        bool retriable = true;
        std::optional<std::chrono::milliseconds> after;
    };
    static Failure failure_of(const std::exception_ptr& thrown);
    // One attempt of a step and how it went.
    struct Attempt {
        int number = 1;
        std::int64_t first_started = 0;  // when the step's first attempt started
        std::int64_t started = 0;
        json out;
        std::optional<json> error;  // failed: {type, message}
        std::optional<std::chrono::milliseconds> retry_after;
        bool retriable = true;
        bool timed_out = false;  // a step in a transaction, past its timeout
        bool committed = false;  // a step in a transaction, written with its record
    };

    // The next operation's slot; throws when replay diverges. The last step's record is
    // written first, unless the operation carries it (a transaction).
    Slot next(std::string_view name, std::string_view kind, bool write_last = true);
    json invoke_timed_out(const Slot& slot, const storage::StepRecord& s);
    // Checks before starting new work: lease, shutdown, cancellation, run timeout.
    void boundary();
    // When the run times out (started_at + run timeout), if it has a timeout.
    std::optional<std::int64_t> deadline() const;
    // Throws RunTimedOut past the deadline.
    void check_deadline() const;
    [[noreturn]] void suspend_until(std::int64_t due);
    // Suspends the run: writes `fn`'s records behind the lease, gives the lease back due
    // at `due`, and unwinds.
    [[noreturn]] void suspend(std::int64_t due,
                              const std::function<void(storage::Transaction&)>& fn);

    // Writes a step record while the lease holds and learns the run's status from it.
    void write(const storage::StepRecord& rec, const storage::AttemptRecord* attempt = nullptr);
    // Writes the last completed step's record, if it waits (`unwritten_`).
    void flush();
    // `fn` in a transaction behind the lease (LeaseLost when it is gone). Unless `ending`,
    // a run cancelled meanwhile records nothing more: Cancelled is thrown instead.
    void fenced(const std::function<void(storage::Transaction&)>& fn, bool ending = false);
    void recorded();  // after a step record committed: the test seam

    storage::StepRecord record(const Slot& slot, std::string_view kind,
                               std::string_view step_status) const;
    std::pair<storage::StepRecord, storage::AttemptRecord> step_written(
        const Slot& slot, int attempt, std::int64_t first_started, std::int64_t started,
        std::int64_t ended, const std::string& outcome) const;
    Attempt try_step(const Slot& slot, const std::function<json()>& fn,
                     const std::function<json(storage::Transaction&)>* in_tx, Attempt a,
                     std::optional<std::chrono::milliseconds> timeout);
    json commit_step(const Slot& slot, const std::function<json(storage::Transaction&)>& fn,
                     int attempt, std::int64_t first_started, std::int64_t started,
                     std::optional<std::chrono::milliseconds> timeout);
    [[noreturn]] void fail_or_retry(const Slot& slot, const RetryPolicy& policy,
                                    storage::StepRecord rec, storage::AttemptRecord att, json error,
                                    bool retriable, std::optional<std::chrono::milliseconds> after);

    // ---- endings ----
    template <class Fn>
    void finish(Fn&& fn);
    void complete_parent(storage::Transaction& tx, const std::optional<std::string>& output,
                         const std::optional<std::string>& error);
    void finish_plain(std::string_view final_status, std::optional<std::string> output,
                      std::optional<std::string> error);
    void finish_completed(const json& output);
    void finish_failed(json error);
    void finish_cancelled();
    // Sends the workflow's on_end events for this run's end, in `tx`.
    void announce_end(storage::Transaction& tx, std::string_view status, const json& output,
                      const json& error);

    Runtime& rt_;
    const Held held_;
    storage::RunState state_;
    const Workflow& wf_;
    json event_;
    std::optional<json> events_;  // events(), once read
    std::string status_;          // the run's, as of the last write or the load
    // The thread replaying the workflow: durable operations are refused on any other (a
    // parallel branch's).
    const std::thread::id thread_ = std::this_thread::get_id();
    std::map<std::int64_t, storage::StepRecord*> by_seq_;
    std::map<std::string, int, std::less<>> name_counts_;
    std::int64_t next_seq_ = 0;
    int current_attempt_ = 0;
    json logs_ = json::array();
    // The last completed step, until the next operation (or the run's end) writes it. The
    // code between two operations is deterministic and does nothing durable, so writing
    // the record there or at the start of the next operation is the same to a crash;
    // and the last step's record shares the commit of the run's end.
    struct Unwritten {
        storage::StepRecord step;
        storage::AttemptRecord attempt;
    };
    std::optional<Unwritten> unwritten_;
};

}  // namespace cairn::engine::detail
