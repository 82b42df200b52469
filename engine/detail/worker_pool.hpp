#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "engine/clock.hpp"
#include "engine/engine.hpp"
#include "storage/database.hpp"
#include "storage/run_store.hpp"

namespace cairn::engine::detail {

// A claimed run's lease, and the flag the lease keeper raises when it is lost.
struct Held {
    storage::Lease lease;
    std::shared_ptr<std::atomic<bool>> lost;
};

// The worker threads and the dispatcher that claims runs for them.
//
// The dispatcher claims as many due runs as there are idle worker threads, then waits
// until woken (a send made runs due, a worker freed up while more may be due, a
// suspended run comes due) or until its poll interval passes; other processes wake it by
// a Postgres NOTIFY. Each kind of thread waits on a condition variable of its own, so a
// finished run wakes the dispatcher alone and a claim wakes one worker per run.
//
// A send made while worker threads are idle may write its runs already claimed by this
// process (Promise): they go straight to those threads after the commit, with no claim
// and no wake-up. Thread-safe.
class WorkerPool {
  public:
    // Executes a claimed run; `state` is the run as claimed when the claim returned it.
    using Execute = std::function<void(const Held& held, std::optional<storage::RunState> state)>;

    // `instance` names this process in its notifications (the worker id it started with).
    WorkerPool(storage::Database& db, storage::RunStore& store, const Clock& clock,
               std::string instance);
    ~WorkerPool();

    // Starts the dispatcher and `options.threads` workers (and, on Postgres, a LISTEN
    // connection), claiming as `options.worker_id` (`instance` when empty). Throws
    // std::logic_error when running.
    void start(const WorkerOptions& options, Execute execute);
    // Claims no more; running executions yield at their next step boundary (stopping()).
    void stop();
    bool running() const { return running_.load(); }
    bool stopping() const { return stopping_.load(); }
    const std::string& worker_id() const { return worker_id_; }
    const WorkerOptions& options() const { return options_; }  // set by start()

    // Flow control's admission (Flow::admit): before each claim it is given the time and
    // the idle threads, makes items due, and returns when the next item is due for
    // admission. While `active` says flow control is in use, every finished execution
    // wakes the dispatcher (its end may have freed slots). Set before start().
    using Admit = std::function<std::optional<std::int64_t>(std::int64_t now, int limit)>;
    void set_admission(Admit admit, std::function<bool()> active) {
        admit_ = std::move(admit);
        admitting_ = std::move(active);
    }

    // After a commit that makes a run this process suspended due at `at`: the dispatcher
    // claims then rather than at its next poll.
    void due_again(std::int64_t at);
    // After a commit that made runs due: wakes this process's idle workers now and, by a
    // NOTIFY sent from a background thread after the commit, those of other processes.
    void announce();
    // Wakes this process's dispatcher only.
    void wake_local();

    // Idle worker threads promised to a send's runs: true when there were as many (and
    // the pool runs). Ended once: by keep() with the runs written claimed (handed to the
    // threads), or with none (the threads are free again), or by destruction.
    class Promise {
      public:
        Promise() = default;
        Promise(WorkerPool& pool, int runs);
        Promise(Promise&& other) noexcept : pool_(other.pool_), n_(std::exchange(other.n_, 0)) {}
        Promise& operator=(Promise&& other) noexcept {
            if (this != &other) {
                keep({});
                pool_ = other.pool_;
                n_ = std::exchange(other.n_, 0);
            }
            return *this;
        }
        ~Promise() { keep({}); }
        explicit operator bool() const { return n_ > 0; }
        // The lease the runs are to be written with.
        storage::ClaimedBy claimed_by() const;
        void keep(std::vector<storage::Claim> claims);

      private:
        WorkerPool* pool_ = nullptr;
        int n_ = 0;
    };

    // The leases of the runs claimed now, for the lease keeper.
    std::vector<Held> held() const;

  private:
    void dispatch_loop();
    void worker_loop();
    // Worker threads neither busy, nor about to take a claimed run, nor promised. With mu_.
    int idle_slots() const;
    void hand_over(int promised, std::vector<storage::Claim> claims);

    storage::Database& db_;
    storage::RunStore& store_;
    const Clock& clock_;
    const std::string instance_;
    std::string worker_id_;  // set by start() before any thread reads it
    // Other processes' notifications wake this one's dispatcher; its own (it woke its own
    // workers when it sent them) carry its id and are passed by.
    std::unique_ptr<storage::Notifier> notifier_;  // null on SQLite
    std::unique_ptr<storage::Listener> listener_;
    WorkerOptions options_;            // constant while running
    Execute execute_;                  // constant while running
    Admit admit_;                      // constant while running
    std::function<bool()> admitting_;  // constant while running

    std::atomic<bool> running_{false};  // between start() and stop()
    std::atomic<bool> stopping_{false};
    mutable std::mutex mu_;
    std::condition_variable work_cv_;      // workers: a claimed run is ready, or stopping
    std::condition_variable dispatch_cv_;  // the dispatcher: woken, retimed, or stopping
    bool wake_ = false;                    // guarded by mu_
    // Whether due runs may be left in the queue: the last claim took all it asked for, or
    // something was made due since. Only then does a worker that frees up wake the
    // dispatcher; a claim that finds nothing costs as much as one that finds runs.
    bool more_due_ = true;  // guarded by mu_
    // The earliest time (ms) a run this process suspended is due again.
    std::int64_t next_due_ = std::numeric_limits<std::int64_t>::max();  // guarded by mu_
    bool retimed_ = false;                // next_due_ moved earlier; guarded by mu_
    std::deque<storage::Claim> ready_;    // claimed, not yet taken; guarded by mu_
    int free_slots_ = 0;                  // worker threads not executing; guarded by mu_
    int promised_ = 0;                    // idle threads promised to sends; guarded by mu_
    std::map<std::string, Held> active_;  // run id -> claimed lease; guarded by mu_
    std::vector<std::thread> threads_;    // changed by start() and stop() only
};

}  // namespace cairn::engine::detail
