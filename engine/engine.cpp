#include "engine/engine.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <functional>
#include <limits>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <type_traits>
#include <utility>

#include "common/ids.hpp"
#include "common/threads.hpp"

namespace cairn {

using storage::Lease;
using storage::StepRecord;
using storage::Transaction;
namespace run_status = storage::run_status;
using std::chrono::milliseconds;

// ---- retry policy ---------------------------------------------------------------------------

milliseconds RetryPolicy::ceiling(int failed_attempts) const {
    const double base = static_cast<double>(initial_delay.count()) *
                        std::pow(multiplier, std::max(0, failed_attempts - 1));
    const double capped = std::min(base, static_cast<double>(max_delay.count()));
    return milliseconds(static_cast<std::int64_t>(std::max(0.0, capped)));
}

milliseconds RetryPolicy::delay(int failed_attempts, std::mt19937_64& rng) const {
    const milliseconds top = ceiling(failed_attempts);
    if (!jitter || top.count() == 0) return top;
    return milliseconds(std::uniform_int_distribution<std::int64_t>(0, top.count())(rng));
}

namespace engine {
namespace {

constexpr std::int64_t kInvokeSafetyNetMs = std::int64_t{365} * 24 * 3600 * 1000;

json error_json(std::string_view type, std::string_view message) {
    return json{{"type", type}, {"message", message}};
}

std::string dump(const json& j) {
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

json parse_or_null(const std::optional<std::string>& text) {
    if (!text) return nullptr;
    return json::parse(*text, nullptr, false);
}

json event_json(const storage::EventRecord& e) {
    json data = json::parse(e.data, nullptr, false);
    if (data.is_discarded()) data = e.data;
    return json{{"id", e.id}, {"name", e.name}, {"data", std::move(data)}, {"ts", e.ts}};
}

// A dotted path ("data.user.id", "data.items.0") into a JSON value; null when absent.
json lookup(const json& root, std::string_view path) {
    const json* cur = &root;
    while (!path.empty()) {
        const auto dot = path.find('.');
        const std::string part(path.substr(0, dot));
        path = dot == std::string_view::npos ? std::string_view{} : path.substr(dot + 1);
        if (cur->is_object()) {
            auto it = cur->find(part);
            if (it == cur->end()) return nullptr;
            cur = &*it;
        } else if (cur->is_array() && !part.empty() &&
                   part.find_first_not_of("0123456789") == std::string::npos) {
            const auto i = std::stoul(part);
            if (i >= cur->size()) return nullptr;
            cur = &(*cur)[i];
        } else {
            return nullptr;
        }
    }
    return *cur;
}

std::string make_worker_id() {
    char host[256] = {};
    if (gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "host");
    return fmt::format("{}:{}:{}", host, getpid(), new_id().substr(30));
}

storage::NewRun new_run(std::string workflow_id, std::string version) {
    storage::NewRun run;
    run.workflow_id = std::move(workflow_id);
    run.version = std::move(version);
    return run;
}

bool is_final(std::string_view status) {
    return status == run_status::kCompleted || status == run_status::kFailed ||
           status == run_status::kCancelled;
}

}  // namespace

// Infrastructure failures (database down) while the engine records state. A Signal, so
// workflow code's `catch (const std::exception&)` cannot mistake it for its own error.
namespace detail {
struct Infrastructure : Signal {
    std::string message;
};
}  // namespace detail

struct Engine::Impl {
    Impl(storage::Database& d, const Clock& c)
        : db(d),
          clock(c),
          store(d),
          worker_id(make_worker_id()),
          instance(worker_id),
          notifier(d.notifier(storage::RunStore::kQueueChannel, instance)) {}

    storage::Database& db;
    const Clock& clock;
    storage::RunStore store;
    std::string worker_id;  // constant after start()
    // This engine's notifications carry it, so its own listener can pass them by: the
    // engine woke its own workers when it notified (announce).
    const std::string instance;
    std::unique_ptr<storage::Notifier> notifier;  // null on SQLite

    // Registry: filled before start(), read-only afterwards.
    std::map<std::string, Workflow, std::less<>> workflows;
    std::map<std::string, std::vector<std::string>, std::less<>> triggers;  // event -> workflow ids

    std::mutex rng_mu;
    std::mt19937_64 rng{std::random_device{}()};  // guarded by rng_mu

    std::atomic<std::int64_t> executions{0};
    std::atomic<std::int64_t> steps_run{0};
    std::atomic<std::int64_t> leases_lost{0};
    std::atomic<std::int64_t> retries{0};
    std::mutex ended_mu;
    std::condition_variable ended_cv;  // runs_ended grew
    std::int64_t runs_ended = 0;       // guarded by ended_mu

    // After the commit that ended a run.
    void ended() {
        {
            std::lock_guard lock(ended_mu);
            ++runs_ended;
        }
        ended_cv.notify_all();
    }
    std::mutex histograms_mu;
    std::map<std::string, std::unique_ptr<Histogram>> step_seconds;  // guarded by histograms_mu

    void observe_step(const std::string& workflow_id, std::int64_t ms) {
        Histogram* h = nullptr;
        {
            std::lock_guard lock(histograms_mu);
            auto& slot = step_seconds[workflow_id];
            if (!slot) slot = std::make_unique<Histogram>();
            h = slot.get();
        }
        h->observe(static_cast<double>(ms) / 1000.0);
    }
    std::atomic<std::int64_t> steps_recorded{0};
    std::atomic<std::int64_t> crash_after{0};
    std::atomic<bool> stopping{false};

    // Worker pool state, guarded by mu. Each kind of thread waits on a condition variable
    // of its own, so a finished run wakes the dispatcher alone and a claim wakes one
    // worker per run, rather than every thread of the pool.
    std::mutex mu;
    std::condition_variable cv;           // workers: a claimed run is ready, or stopping
    std::condition_variable dispatch_cv;  // the dispatcher: wake was set, or stopping
    std::condition_variable keeper_cv;    // the lease keeper: stopping
    bool wake = false;
    // Whether due runs may be left in the queue: the last claim took all it asked for, or
    // something was made due since. Only then does a worker that frees up wake the
    // dispatcher; a claim that finds nothing costs as much as one that finds runs.
    bool more_due = true;
    // The earliest time (ms) a run this process suspended is due again: the dispatcher
    // claims then, not at its next poll.
    std::int64_t next_due = std::numeric_limits<std::int64_t>::max();
    bool retimed = false;  // next_due moved earlier: the dispatcher waits again, for less
    std::deque<storage::Claim> ready;
    int free_slots = 0;
    int promised = 0;  // idle worker threads promised to sends claiming their runs
    struct Active {
        Lease lease;
        std::shared_ptr<std::atomic<bool>> lost;
    };
    std::map<std::string, Active> active;  // run id -> claimed lease (ready or executing)
    WorkerOptions options;
    std::vector<std::thread> threads;
    std::unique_ptr<storage::Listener> listener;

    std::int64_t now() const { return clock.now_ms(); }

    milliseconds retry_delay(const RetryPolicy& p, int failed) {
        std::lock_guard lock(rng_mu);
        return p.delay(failed, rng);
    }

    // After a commit that makes a run due at `at` (a retry, the end of a sleep or a wait).
    void due_again(std::int64_t at) {
        {
            std::lock_guard lock(mu);
            if (at >= next_due) return;
            next_due = at;
            retimed = true;
        }
        dispatch_cv.notify_one();
    }

    void wake_local() {
        {
            std::lock_guard lock(mu);
            wake = true;
            more_due = true;
        }
        dispatch_cv.notify_one();
    }

    // After a commit that made runs due: wakes this process's idle workers now and those
    // of other processes by a NOTIFY sent after the commit, never in it (docs/engine.md).
    void announce() {
        wake_local();
        if (notifier) notifier->notify();
    }

    // ---- group commit -------------------------------------------------------------------
    //
    // Fenced writes of concurrent executions share one transaction: a writer that finds
    // writes queued and a leader slot free becomes a leader, takes every write queued so
    // far, runs them in one transaction (each behind its own fence check) and commits
    // once; writers that arrive meanwhile queue up for the next batch. Every writer
    // returns only after the commit that holds its write, so durability is unchanged;
    // only the number of commits (and fsyncs) drops. docs/performance.md.
    struct Pending {
        enum class Outcome { waiting, done, lost, alone };
        const Lease* lease;  // null: a write behind no fence (a claim, a send: transact())
        // What to write: a record (a step, the run's end; written with other runs' records
        // in multi-row statements), or any other write as a function run behind its own
        // fence check.
        storage::RunWrite* record = nullptr;
        const std::function<void(Transaction&)>* fn = nullptr;
        // Postgres: an event (Engine::send) written with the batch's other events in one
        // statement; `fn` is its transactional path, for one that statement leaves out.
        storage::EventWrite* event = nullptr;
        Outcome result = Outcome::waiting;   // set by whoever writes it
        Outcome outcome = Outcome::waiting;  // published to the writer; guarded by gc_mu
        std::condition_variable cv;          // the writer waits on it, for its outcome or
                                             // its turn to lead
        // A caller's transaction (Engine::send): written alone after a failed batch, its
        // errors reach the caller as thrown, not as Infrastructure.
        bool own_errors = false;
    };
    std::mutex gc_mu;
    std::vector<Pending*> gc_queue;  // guarded by gc_mu
    int gc_leaders = 0;              // batches being committed now; guarded by gc_mu
    // Batches committed at once: SQLite has one writer, so one; on Postgres two, so one
    // batch's round trips overlap the other's commit (with writer threads, two carried
    // bigger batches and measured faster than four: docs/performance.md, section 11).
    // 0 turns group commit off (set_group_commit).
    static int default_leaders(storage::Backend b) {
        return b == storage::Backend::postgres ? 2 : 1;
    }
    std::atomic<int> gc_max_leaders{default_leaders(db.backend())};
    std::atomic<std::int64_t> gc_batches{0};
    std::atomic<std::int64_t> gc_writes{0};
    std::atomic<std::int64_t> gc_writer_cpu_ns{0};  // EngineStats::writer_cpu_ns
    // While workers run, batches that had to wait are written by writer threads, one per
    // leader slot (submit_to_writers); started by start() before any worker exists,
    // joined by stop() after the last one.
    std::vector<std::thread> gc_writer;    // changed only while no worker thread runs
    bool gc_writer_stopping = false;       // guarded by gc_mu
    // Writer threads take queued writes: set by start() once they run, cleared by stop()
    // before they are told to finish. Guarded by gc_mu, since threads other than the
    // engine's (Engine::send's callers) submit too.
    bool gc_writers_live = false;
    std::condition_variable gc_writer_cv;  // wakes a writer thread

    static Pending::Outcome record_result(const Pending* p) {
        return p->record->held ? Pending::Outcome::done : Pending::Outcome::lost;
    }

    // Writes `batch`, committed when this returns; sets each item's result to done or lost.
    // Records are written together (RunStore::write_runs: on Postgres one statement, with
    // no transaction around it when the batch holds nothing else).
    void write_batch(std::span<Pending* const> batch) {
        std::vector<storage::RunWrite*> records;
        for (Pending* p : batch) {
            if (p->record != nullptr) records.push_back(p->record);
        }
        if (records.size() == batch.size()) {
            store.write_runs(records);
            for (Pending* p : batch) p->result = record_result(p);
            return;
        }
        db.transact([&](Transaction& tx) {
            store.write_runs(tx, records);
            for (Pending* p : batch) {
                if (p->record != nullptr) {
                    p->result = record_result(p);
                } else if (p->lease != nullptr && !store.hold_fence(tx, *p->lease)) {
                    p->result = Pending::Outcome::lost;
                } else {
                    (*p->fn)(tx);
                    p->result = Pending::Outcome::done;
                }
            }
        });
    }

    // Runs one batch and never throws; returns the writes whose outcome the caller is to
    // publish. A batch that fails for any reason hands its writes back to run alone
    // (write_alone), which retries conflicts and reports errors to each writer itself.
    // Events (Postgres) are a statement and a commit of their own beside the rest: they
    // need no fence, and a failure of one part leaves the other written. Their outcomes are
    // published as soon as their statement commits, so a sender does not also wait for the
    // step records written after them (a published writer may return at once: its Pending
    // is not touched again).
    std::vector<Pending*> commit_batch(std::span<Pending* const> batch) {
        if (std::ranges::none_of(batch, [](const Pending* p) { return p->event != nullptr; })) {
            commit_writes(batch);
            return {batch.begin(), batch.end()};
        }
        std::vector<Pending*> events, rest;
        for (Pending* p : batch) (p->event != nullptr ? events : rest).push_back(p);
        std::vector<storage::EventWrite*> writes;
        for (Pending* p : events) writes.push_back(p->event);
        try {
            store.insert_events(writes);
            for (Pending* p : events)
                p->result = p->event->written ? Pending::Outcome::done : Pending::Outcome::alone;
            count_batch(events.size());
        } catch (const std::exception& e) {
            spdlog::debug("group commit of {} events failed ({}); sending them one by one",
                          events.size(), e.what());
            for (Pending* p : events) p->result = Pending::Outcome::alone;
        }
        if (rest.empty()) return events;
        {
            std::lock_guard lock(gc_mu);
            for (Pending* p : events) {
                p->outcome = p->result;
                p->cv.notify_one();
            }
        }
        commit_writes(rest);
        return rest;
    }

    void commit_writes(std::span<Pending* const> batch) {
        try {
            write_batch(batch);
            count_batch(batch.size());
        } catch (const std::exception& e) {
            spdlog::debug("group commit of {} writes failed ({}); writing them one by one",
                          batch.size(), e.what());
            for (Pending* p : batch) p->result = Pending::Outcome::alone;
        }
    }

    void count_batch(std::size_t writes) {
        if (writes < 2) return;
        ++gc_batches;
        gc_writes += static_cast<std::int64_t>(writes);
    }

    // Writes `mine` behind a check that its lease still holds, possibly sharing the commit
    // with other executions' writes (group commit); returns once committed. While the
    // workers run, writer threads write the batches (submit_to_writers). Without them
    // (run_until_idle before start()), a writer that finds writes queued and a leader slot
    // free leads: it takes the whole queue, commits it, then wakes each writer of the batch
    // (and the next leader) one by one.
    // Throws LeaseLost when the lease is gone, Infrastructure when the database fails.
    void submit(Pending& mine) {
        const int max_leaders = gc_max_leaders.load();
        if (max_leaders == 0) return write_alone(mine);
        {
            std::unique_lock lock(gc_mu);
            gc_queue.push_back(&mine);
            if (gc_writers_live) submit_to_writers(lock, mine);
            while (mine.outcome == Pending::Outcome::waiting) {
                if (gc_queue.empty() || gc_leaders >= gc_max_leaders.load()) {
                    mine.cv.wait(lock);  // for a leader to write this, or a free slot
                    continue;
                }
                ++gc_leaders;
                std::vector<Pending*> batch;
                batch.swap(gc_queue);
                lock.unlock();
                const auto written = commit_batch(batch);
                lock.lock();
                --gc_leaders;
                for (Pending* p : written) {
                    p->outcome = p->result;
                    if (p != &mine) p->cv.notify_one();
                }
                if (!gc_queue.empty()) gc_queue.front()->cv.notify_one();  // the next leader
            }
        }
        if (mine.outcome == Pending::Outcome::alone) return write_alone(mine);
        if (mine.outcome == Pending::Outcome::lost) {
            ++leases_lost;
            throw detail::LeaseLost{};
        }
    }

    // While the workers run. A write that finds a leader slot free and nothing else queued
    // is written at once by its own thread, so a run on its own pays no thread hand-off per
    // step; otherwise it waits for a writer thread, which writes batch after batch while
    // writes are queued. Workers then never lead the batches of others: handing leadership
    // from worker to worker was measurably slower (docs/performance.md, section 11).
    void submit_to_writers(std::unique_lock<std::mutex>& lock, Pending& mine) {
        if (gc_leaders < gc_max_leaders.load() && gc_queue.size() == 1) {
            ++gc_leaders;
            gc_queue.clear();
            lock.unlock();
            Pending* const one[] = {&mine};
            commit_batch(one);
            lock.lock();
            --gc_leaders;
            mine.outcome = mine.result;
            if (!gc_queue.empty()) gc_writer_cv.notify_one();  // queued meanwhile
            return;
        }
        if (gc_leaders < gc_max_leaders.load()) gc_writer_cv.notify_one();
        mine.cv.wait(lock, [&mine] { return mine.outcome != Pending::Outcome::waiting; });
    }

    void writer_loop() {
        std::int64_t cpu = thread_cpu_ns();
        std::unique_lock lock(gc_mu);
        for (;;) {
            gc_writer_cv.wait(lock, [this] {
                return (gc_writer_stopping && gc_queue.empty()) ||
                       (!gc_queue.empty() && gc_leaders < gc_max_leaders.load());
            });
            if (gc_queue.empty()) return;  // stopping, and every write is written
            ++gc_leaders;
            while (!gc_queue.empty()) {
                std::vector<Pending*> batch;
                batch.swap(gc_queue);
                lock.unlock();
                const auto written = commit_batch(batch);
                // Read outside gc_mu; waking this batch's writers counts with the next.
                const std::int64_t now_cpu = thread_cpu_ns();
                gc_writer_cpu_ns += now_cpu - cpu;
                cpu = now_cpu;
                lock.lock();
                for (Pending* p : written) {
                    p->outcome = p->result;
                    p->cv.notify_one();
                }
            }
            --gc_leaders;
        }
    }

    // One fenced write committed on its own.
    void write_alone(Pending& mine) {
        if (mine.own_errors) return db.transact(*mine.fn);
        constexpr int kAttempts = 3;
        for (int attempt = 1;; ++attempt) {
            try {
                Pending* const one[] = {&mine};
                write_batch(one);
                break;
            } catch (const storage::TransactionConflict& e) {
                if (attempt == kAttempts) throw detail::Infrastructure{{}, e.what()};
            } catch (const storage::StorageError& e) {
                throw detail::Infrastructure{{}, e.what()};
            }
        }
        if (mine.result == Pending::Outcome::lost) {
            ++leases_lost;
            throw detail::LeaseLost{};
        }
    }

    // Runs `fn(tx)` in a transaction that first checks `lease` still holds.
    template <class Fn>
    void fenced(const Lease& lease, Fn&& fn) {
        const std::function<void(Transaction&)> f = std::ref(fn);
        Pending mine{&lease, nullptr, &f};
        submit(mine);
    }

    // Claims up to `want` due runs for the dispatcher. On SQLite, while writer threads run,
    // the claim is one more write in the next batch: it shares the commit of the step
    // records (claims were almost half of SQLite's commits, each one a hand-over between
    // the engine's writer thread and the database's). Postgres claims in a statement of
    // its own, in autocommit, beside the batches.
    std::vector<storage::Claim> claim(int want) {
        const std::int64_t at = now();
        const std::int64_t lease_ms = options.lease.count();
        if (db.backend() == storage::Backend::postgres)
            return store.claim_runs(worker_id, want, at, lease_ms);
        return transact([&](Transaction& tx) {
            return storage::RunStore::claim_runs(tx, worker_id, want, at, lease_ms);
        });
    }

    // Runs `fn(tx)` in a write transaction and returns what it returns. On SQLite, while
    // writer threads run, the transaction is one more write in the engine's next batch,
    // as a claim is: events sent while runs execute share the commits of their step
    // records instead of taking turns with them for the one writer. A batch that fails
    // runs it again on its own, and what it throws then reaches the caller unchanged.
    template <class Fn>
    auto transact(Fn&& fn) -> std::invoke_result_t<Fn&, Transaction&> {
        if (db.backend() != storage::Backend::sqlite || !batching())
            return db.transact(fn);  // the storage layer's group commit batches it
        std::optional<std::invoke_result_t<Fn&, Transaction&>> out;
        const std::function<void(Transaction&)> f = [&](Transaction& tx) { out = fn(tx); };
        Pending mine{nullptr, nullptr, &f};
        mine.own_errors = true;
        submit(mine);
        return std::move(*out);
    }

    // Whether writes go to the writer threads now (they run, and group commit is on).
    bool batching() {
        if (gc_max_leaders.load() == 0) return false;
        std::lock_guard lock(gc_mu);
        return gc_writers_live;
    }

    // Writes a record (a step and its attempt, the run's end) while `lease` holds; returns
    // the run's status after it.
    std::string write_record(storage::RunWrite& w) {
        Pending mine{w.lease, &w, nullptr};
        submit(mine);
        return w.run_status;
    }

    std::size_t triggered_count(std::string_view name) const {
        const auto it = triggers.find(name);
        return it == triggers.end() ? 0 : it->second.size();
    }

    // A run of every workflow the event named `name` triggers.
    std::vector<storage::NewRun> triggered(std::string_view name) const {
        std::vector<storage::NewRun> runs;
        if (auto it = triggers.find(name); it != triggers.end()) {
            for (const auto& id : it->second) runs.push_back(new_run(id, workflows.at(id).version));
        }
        return runs;
    }

    static storage::NewEvent new_event(const EventInput& in) {
        if (in.name.empty()) throw std::invalid_argument("event name must not be empty");
        storage::NewEvent e;
        e.name = in.name;
        e.data = dump(in.data);
        e.id = in.id;
        e.idempotency_key = in.idempotency_key;
        e.ts = in.ts;
        return e;
    }

    // Engine::send without riders on Postgres while the workers run: the event is one more
    // write in the writer threads' next batch, where concurrent sends share one statement
    // and commit (RunStore::insert_events) instead of a commit each. One the statement
    // leaves out (a duplicate, or a run waits for its name) takes the transactional path
    // on its own, and what that throws reaches the caller unchanged.
    //
    // While this engine has idle worker threads for all of the event's runs, the runs are
    // written claimed by it and handed to those threads after the commit: no claim
    // statement, no state read, no wake-up of any dispatcher (docs/performance.md,
    // section 15). The lease works as a claim's does; should this process die, the runs
    // are claimed again when it expires.
    SendResult send_batched(const EventInput& in, const storage::NewEvent& e,
                            std::span<const storage::NewRun> runs) {
        storage::EventWrite w{&e, runs, now()};
        Promise promise(*this, static_cast<int>(runs.size()));
        if (promise) w.claimed = promise.claimed_by();
        std::optional<SendResult> out;
        const std::function<void(Transaction&)> f = [&](Transaction& tx) { out = send(tx, in); };
        Pending mine{nullptr, nullptr, &f};
        mine.event = &w;
        mine.own_errors = true;
        submit(mine);
        if (w.claimed) promise.keep(std::move(w.claimed->claims));
        if (!w.written) {
            if (!out->run_ids.empty() || out->waits_resumed > 0) announce();
            return std::move(*out);
        }
        if (!w.claimed && !runs.empty()) announce();
        return SendResult{w.inserted.event_id, w.inserted.run_ids, false, 0};
    }

    // Worker threads neither busy, nor about to take a claimed run, nor promised to a send.
    // Called with mu held.
    int idle_slots() const { return free_slots - static_cast<int>(ready.size()) - promised; }

    // A send's promise of idle worker threads for its `n` runs (false when there are
    // fewer), ended exactly once: by keep() with the runs it wrote claimed, or, should it
    // write none or throw, on destruction (hand_over).
    class Promise {
      public:
        Promise(Impl& im, int n) : im_(im), n_(0) {
            if (n <= 0) return;
            std::lock_guard lock(im.mu);
            if (im.stopping || im.idle_slots() < n) return;
            im.promised += n;
            n_ = n;
        }
        ~Promise() {
            if (n_ > 0) im_.hand_over(n_, {});
        }
        Promise(const Promise&) = delete;
        Promise& operator=(const Promise&) = delete;
        explicit operator bool() const { return n_ > 0; }
        // The lease the runs are written with.
        storage::ClaimedBy claimed_by() const {
            return {im_.worker_id, im_.now() + im_.options.lease.count(), {}};
        }
        void keep(std::vector<storage::Claim> claims) {
            if (n_ > 0) im_.hand_over(std::exchange(n_, 0), std::move(claims));
        }

      private:
        Impl& im_;
        int n_;
    };

    // Engine::send on Postgres: a path of one statement, if it applies (announcing the
    // runs it makes due); nullopt leaves the event to the transactional path. The write
    // is one of the shared statements of write_alone, waited for here.
    std::optional<SendResult> send_alone(const EventInput& in, const Engine::Riders& riders,
                                         const storage::OnlyIf& only_if) {
        // Only Postgres has the path: elsewhere, do not build the event twice.
        if (db.backend() != storage::Backend::postgres) return std::nullopt;
        if (!riders && !only_if && batching())
            return send_batched(in, new_event(in), triggered(in.name));
        if (!alone_applies(in, riders, only_if)) return std::nullopt;
        const auto st = alone_state(in, riders, only_if);
        // Alone: two of one key in a statement are not kept apart.
        if (in.id || in.idempotency_key) {
            storage::RunStore::AloneWrite* const one[] = {&st->write};
            store.insert_events_alone(one);
            return finish_alone(*st);
        }
        struct Wait {
            std::condition_variable cv;
            bool done = false;  // guarded by alone_mu
            std::exception_ptr error;
        } wait;
        write_alone({&st->write, [this, &wait](std::exception_ptr error) {
                         std::lock_guard lock(alone_mu);
                         wait.error = std::move(error);
                         wait.done = true;
                         wait.cv.notify_one();
                     }});
        {
            std::unique_lock lock(alone_mu);
            wait.cv.wait(lock, [&wait] { return wait.done; });
        }
        if (wait.error) std::rethrow_exception(wait.error);
        return finish_alone(*st);
    }

    // Engine::send with `done`: a send_alone that does not wait for its statement.
    void send_later(EventInput in, Engine::Riders riders, storage::OnlyIf only_if,
                    const Engine::SendDone& done) {
        if (!alone_applies(in, riders, only_if) || in.id || in.idempotency_key) {
            SendOutcome out;
            out.rest = [this, in = std::move(in), riders = std::move(riders),
                        only_if = std::move(only_if)] {
                return send_blocking(in, riders, only_if);
            };
            done(std::move(out));
            return;
        }
        auto st = alone_state(std::move(in), std::move(riders), std::move(only_if));
        storage::RunStore::AloneWrite* const write = &st->write;
        write_alone({write, [this, st = std::move(st), done](std::exception_ptr error) {
                         SendOutcome out;
                         if (error) {
                             st->promise.keep({});
                             out.error = std::move(error);
                         } else if (auto sent = finish_alone(*st)) {
                             out.result = std::move(*sent);
                         } else {
                             out.rest = [this, st] {
                                 return send_transacted(st->in, st->riders, st->only_if);
                             };
                         }
                         done(std::move(out));
                     }});
    }

    // Whether a send takes send_alone's one statement: on Postgres, unless it is plain
    // while the workers run (send_batched's), and for an event that starts runs
    // (insert_events_alone): one that starts none need not wait for a shared statement
    // only to be left out of it.
    bool alone_applies(const EventInput& in, const Engine::Riders& riders,
                       const storage::OnlyIf& only_if) {
        return db.backend() == storage::Backend::postgres && (riders || only_if || !batching()) &&
               triggered_count(in.name) > 0;
    }

    SendResult send_blocking(const EventInput& in, const Engine::Riders& riders,
                             const storage::OnlyIf& only_if) {
        if (auto out = send_alone(in, riders, only_if)) return *out;
        return send_transacted(in, riders, only_if);
    }

    // One send_alone's write and what it keeps until the write is done.
    struct AloneState {
        AloneState(Impl& im, EventInput input, Engine::Riders r, storage::OnlyIf c, int claims)
            : in(std::move(input)),
              riders(std::move(r)),
              only_if(std::move(c)),
              promise(im, claims) {}
        EventInput in;
        Engine::Riders riders;
        storage::OnlyIf only_if;
        storage::NewEvent event;
        std::vector<storage::NewRun> runs;
        Promise promise;
        std::optional<storage::ClaimedBy> claimed;
        storage::RunStore::Riders rows;
        storage::RunStore::AloneWrite write;
    };

    // Claiming its runs, as send_batched does, while idle threads can take them.
    std::shared_ptr<AloneState> alone_state(EventInput in, Engine::Riders riders,
                                            storage::OnlyIf only_if) {
        std::vector<storage::NewRun> runs = triggered(in.name);
        const int claims = batching() ? static_cast<int>(runs.size()) : 0;
        auto st = std::make_shared<AloneState>(*this, std::move(in), std::move(riders),
                                               std::move(only_if), claims);
        st->event = new_event(st->in);
        st->runs = std::move(runs);
        if (st->promise) st->claimed = st->promise.claimed_by();
        st->rows = [raw = st.get()](const storage::InsertedEvent& ids) {
            return raw->riders ? raw->riders(SendResult{ids.event_id, ids.run_ids, false, 0})
                               : std::vector<storage::RowInsert>{};
        };
        st->write = {&st->event,
                     st->runs,
                     now(),
                     &st->rows,
                     st->only_if ? &st->only_if : nullptr,
                     st->claimed ? &*st->claimed : nullptr,
                     std::nullopt};
        return st;
    }

    // After the write: the runs go to the promised threads, or are announced. Nullopt
    // when the statement left the send out (its condition failed, or a run waits for the
    // event's name): the transactional path is to send it.
    std::optional<SendResult> finish_alone(AloneState& st) {
        const auto& ins = st.write.inserted;
        if (!ins) {
            st.promise.keep({});
            return std::nullopt;
        }
        if (st.claimed) {
            st.promise.keep(std::move(st.claimed->claims));
        } else {
            announce();
        }
        return SendResult{ins->event_id, ins->run_ids, false, 0};
    }

    // The one-statement sends of send_alone. Sends made at once share a statement and its
    // commit (RunStore::insert_events_alone), as the storage layer's group commit shares
    // transactions. A send that finds nothing queued or in flight is written at once by
    // its own thread (no hand-off); otherwise it is queued, and two writer threads write
    // the queue (at most kAloneBatch a statement), so no sender's thread waits for the
    // statements of others and a send that answers later holds no thread meanwhile. While
    // one statement is in flight, the second writer starts once kAloneSecond sends wait:
    // one statement held up (a slow commit, a busy core) then holds up only its own sends
    // (docs/performance.md, sections 28 and 29). A shared statement that fails writes
    // nothing, and its sends are written one by one, so each gets its own outcome.
    // Callers keep an event with an id or idempotency key out: two of one key in a
    // statement are not kept apart.
    static constexpr std::size_t kAloneBatch = 32;
    static constexpr std::size_t kAloneSecond = 4;
    static constexpr int kAloneWriters = 2;
    struct AloneSend {
        storage::RunStore::AloneWrite* write;
        // Called once written (or failed, with the error), on the thread that wrote.
        std::function<void(std::exception_ptr)> written;
    };
    std::mutex alone_mu;
    std::condition_variable alone_cv;        // the writer threads wait on it
    std::deque<AloneSend> alone_queue;       // guarded by alone_mu
    int alone_writing = 0;                   // statements in flight; guarded by alone_mu
    bool alone_stopping = false;             // guarded by alone_mu
    std::vector<std::thread> alone_writers;  // started with the first send queued

    // Called with alone_mu held.
    bool alone_due() const {
        return !alone_queue.empty() &&
               (alone_writing == 0 || (alone_writing == 1 && alone_queue.size() >= kAloneSecond));
    }

    void write_alone(AloneSend send) {
        std::unique_lock lock(alone_mu);
        if ((alone_writing == 0 && alone_queue.empty()) || alone_stopping) {
            ++alone_writing;
            lock.unlock();
            write_alone_batch(std::span(&send, 1));
            lock.lock();
            --alone_writing;
        } else {
            alone_queue.push_back(std::move(send));
            while (alone_writers.size() < kAloneWriters) {
                alone_writers.emplace_back([this] {
                    name_this_thread("cairn-sends");
                    set_batch_scheduling(false);  // not its creator's policy
                    alone_writer_loop();
                });
            }
        }
        if (alone_due()) alone_cv.notify_one();
    }

    void alone_writer_loop() {
        std::unique_lock lock(alone_mu);
        for (;;) {
            alone_cv.wait(
                lock, [this] { return alone_due() || (alone_stopping && alone_queue.empty()); });
            if (alone_queue.empty()) return;  // stopping, and every send is written
            ++alone_writing;
            std::vector<AloneSend> batch;
            while (!alone_queue.empty() && batch.size() < kAloneBatch) {
                batch.push_back(std::move(alone_queue.front()));
                alone_queue.pop_front();
            }
            if (alone_due()) alone_cv.notify_one();  // enough left for the second statement
            lock.unlock();
            write_alone_batch(batch);
            batch.clear();  // what the sends kept, freed outside the lock
            lock.lock();
            --alone_writing;
        }
    }

    // Writes what is queued when the engine goes, then ends the writer threads.
    void stop_alone_writers() {
        {
            std::lock_guard lock(alone_mu);
            alone_stopping = true;
        }
        alone_cv.notify_all();
        for (auto& t : alone_writers) t.join();
    }

    // Never throws: each send's `written` gets what its write threw.
    void write_alone_batch(std::span<AloneSend> batch) {
        std::vector<std::exception_ptr> errors(batch.size());
        bool shared = false;
        if (batch.size() > 1) {
            std::vector<storage::RunStore::AloneWrite*> writes;
            for (const AloneSend& s : batch) writes.push_back(s.write);
            try {
                store.insert_events_alone(writes);
                count_batch(batch.size());
                shared = true;
            } catch (const std::exception& e) {
                spdlog::debug("a statement of {} sends failed ({}); writing them one by one",
                              batch.size(), e.what());
            }
        }
        for (std::size_t i = 0; !shared && i < batch.size(); ++i) {
            try {
                storage::RunStore::AloneWrite* const one[] = {batch[i].write};
                store.insert_events_alone(one);
            } catch (...) {
                errors[i] = std::current_exception();
            }
        }
        for (std::size_t i = 0; i < batch.size(); ++i) {
            try {
                batch[i].written(errors[i]);
            } catch (const std::exception& e) {
                spdlog::error("a send's completion failed: {}", e.what());
            }
        }
    }

    // Engine::send's transactional path (every send on SQLite; on Postgres a send that
    // send_alone leaves). While the workers run and have idle threads for all of the
    // event's runs, the runs are written claimed and handed to those threads after the
    // commit, as send_batched does: the dispatcher's wake-up and claim are saved.
    SendResult send_transacted(const EventInput& in, const Engine::Riders& riders,
                               const storage::OnlyIf& only_if) {
        Promise promise(*this, batching() ? static_cast<int>(triggered_count(in.name)) : 0);
        std::optional<storage::ClaimedBy> claimed;
        // A condition that fails writes nothing and throws only after the transaction: a
        // throw inside would fail a whole batch of other writers with it.
        const std::optional<SendResult> out =
            transact([&](Transaction& tx) -> std::optional<SendResult> {
                if (promise) claimed = promise.claimed_by();  // afresh if the batch runs it again
                if (only_if && !storage::RunStore::holds(tx, only_if)) return std::nullopt;
                auto sent = send(tx, in, claimed ? &*claimed : nullptr);
                if (riders) storage::RunStore::insert_rows(tx, riders(sent));
                return sent;
            });
        const bool mine = claimed && !claimed->claims.empty();
        if (claimed) promise.keep(std::move(claimed->claims));
        if (!out) throw PreconditionFailed();
        if ((!mine && !out->run_ids.empty()) || out->waits_resumed > 0) announce();
        return *out;
    }

    // Ends a send's promise of `promise` idle worker threads: its claimed runs (as many,
    // or none when it wrote nothing claimed) go to them, or back to the queue when the
    // engine is stopping.
    void hand_over(int promise, std::vector<storage::Claim> claims) {
        std::vector<Lease> back;
        {
            std::lock_guard lock(mu);
            promised -= promise;
            for (auto& c : claims) {
                if (stopping) {
                    back.push_back(c.lease);
                    continue;
                }
                active[c.lease.run_id] = {c.lease, std::make_shared<std::atomic<bool>>(false)};
                ready.push_back(std::move(c));
                cv.notify_one();
            }
        }
        for (const Lease& l : back) {
            try {
                store.release(l, now());
            } catch (const std::exception& e) {
                spdlog::warn("giving back run {} failed: {}", l.run_id, e.what());
            }
        }
    }

    // With `claimed`, the event's runs are written claimed (storage::ClaimedBy).
    SendResult send(Transaction& tx, const EventInput& in, storage::ClaimedBy* claimed = nullptr) {
        const storage::NewEvent e = new_event(in);
        const std::int64_t t = now();
        auto ins = store.insert_event(tx, e, triggered(in.name), t, claimed);
        SendResult out{ins.event_id, ins.run_ids, ins.duplicate, 0};
        if (ins.duplicate) return out;

        // Most events resume nothing: build the event as a waiting step sees it only if
        // some run waits on this name (this runs inside the writer's serial path on SQLite).
        const auto waits = store.waits_for(tx, in.name);
        if (waits.empty()) return out;
        const json ev = json{
            {"id", ins.event_id}, {"name", in.name}, {"data", in.data}, {"ts", in.ts.value_or(t)}};
        const std::string ev_text = dump(ev);
        for (const auto& w : waits) {
            if (!w.match_value) continue;  // the waiting run's own event lacked the field
            const json want = json::parse(*w.match_value, nullptr, false);
            if (want.is_discarded() || lookup(ev, w.match_field) != want) continue;
            if (store.complete_waiting_step(tx, w.run_id, w.step_key, ev_text, std::nullopt, t))
                ++out.waits_resumed;
        }
        return out;
    }

    void maybe_crash() {
        const auto limit = crash_after.load();
        if (limit > 0 && ++steps_recorded >= limit) {
            spdlog::warn("CAIRN_CRASH_AFTER_STEPS={} reached: exiting abruptly", limit);
            std::_Exit(137);
        }
    }

    // Executes the claimed run; `state` is the run as claimed when the claim returned it.
    void execute(const Lease& lease, const std::shared_ptr<std::atomic<bool>>& lost,
                 std::optional<storage::RunState> state = std::nullopt);
};

// ---- execution ------------------------------------------------------------------------------

namespace detail {

// The state of one execution (one claim) of one run, behind a Context.
class Execution {
  public:
    Execution(Engine::Impl& e, Lease l, storage::RunState s, const Workflow& w,
              std::shared_ptr<std::atomic<bool>> lost_flag)
        : engine(e), lease(std::move(l)), state(std::move(s)), wf(w), lost(std::move(lost_flag)) {
        event = event_json(state.event);
        status = state.run.status;
        for (auto& step : state.steps) by_seq.emplace(step.seq, &step);
    }

    // Writes a step record while the lease holds and learns the run's status from it.
    void write(const StepRecord& rec, const storage::AttemptRecord* attempt = nullptr) {
        storage::RunWrite w{&lease, &rec, attempt};
        status = engine.write_record(w);
    }

    Engine::Impl& engine;
    Lease lease;
    storage::RunState state;
    const Workflow& wf;
    std::shared_ptr<std::atomic<bool>> lost;
    json event;
    std::string status;  // the run's, as of the last write or the load
    std::map<std::int64_t, StepRecord*> by_seq;
    std::map<std::string, int, std::less<>> name_counts;
    std::int64_t next_seq = 0;
    int current_attempt = 0;
    json logs = json::array();
    // The last completed step, until the next operation (or the run's end) writes it. The
    // code between two operations is deterministic and does nothing durable, so writing
    // the record there or at the start of the next operation is the same to a crash —
    // but the last step's record shares the commit of the run's end.
    struct Unwritten {
        StepRecord step;
        storage::AttemptRecord attempt;
    };
    std::optional<Unwritten> unwritten;

    struct Slot {
        std::string key;
        std::int64_t seq;
        StepRecord* stored;
    };

    std::int64_t now() const { return engine.now(); }
    const std::string& run_id() const { return state.run.id; }

    // Writes the last step's record, if it waits (see `unwritten`).
    void flush() {
        if (!unwritten) return;
        write(unwritten->step, &unwritten->attempt);
        unwritten.reset();
        engine.maybe_crash();
    }

    // The next operation's key and recorded state; throws when replay diverges. The last
    // step's record is written first, unless the operation carries it (a transaction).
    Slot next(std::string_view name, std::string_view kind, bool write_last = true) {
        if (write_last) flush();
        if (name.empty()) throw std::invalid_argument("operation name must not be empty");
        if (current_attempt != 0) {
            throw std::logic_error(
                fmt::format("'{}' was called inside a step; durable operations cannot nest", name));
        }
        const int n = ++name_counts[std::string(name)];
        Slot slot{n == 1 ? std::string(name) : fmt::format("{}#{}", name, n), next_seq++, nullptr};
        if (auto it = by_seq.find(slot.seq); it != by_seq.end()) {
            slot.stored = it->second;
            if (slot.stored->key != slot.key || slot.stored->kind != kind) {
                throw NonDeterministicError(
                    fmt::format("non-deterministic workflow: operation #{} was recorded as {} '{}' "
                                "but the code now "
                                "asks for {} '{}'",
                                slot.seq + 1, slot.stored->kind, slot.stored->key, kind, slot.key));
            }
        }
        return slot;
    }

    // Checks before starting new work: lease, shutdown, cancellation, run timeout.
    void boundary() {
        if (lost->load()) throw LeaseLost{};
        if (engine.stopping.load()) {
            flush();
            engine.fenced(lease, [&](Transaction& tx) { engine.store.release(tx, lease, now()); });
            throw Suspend{};
        }
        // The status as of this execution's last write (or its load): a cancel that
        // commits while a step runs stops the run before the next one.
        if (status == run_status::kCancelled) throw Cancelled{};
        if (wf.run_timeout && state.run.started_at &&
            now() - *state.run.started_at > wf.run_timeout->count()) {
            throw RunTimedOut{{}, wf.run_timeout->count()};
        }
    }

    [[noreturn]] void suspend_until(std::int64_t due) {
        flush();
        engine.fenced(lease, [&](Transaction& tx) { engine.store.release(tx, lease, due); });
        engine.due_again(due);
        throw Suspend{};
    }

    StepRecord record(const Slot& slot, std::string_view kind, std::string_view step_status) const {
        StepRecord r;
        r.run_id = run_id();
        r.key = slot.key;
        r.seq = slot.seq;
        r.kind = std::string(kind);
        r.status = std::string(step_status);
        r.attempts = 1;
        r.started_at = now();
        return r;
    }

    // The record of a step whose attempt ran from `started` to `ended` (completed, until the
    // caller says otherwise), and the attempt's own record with its `outcome`.
    std::pair<StepRecord, storage::AttemptRecord> step_written(const Slot& slot, int attempt,
                                                               std::int64_t first_started,
                                                               std::int64_t started,
                                                               std::int64_t ended,
                                                               const std::string& outcome) const {
        StepRecord rec = record(slot, "step", "completed");
        rec.attempts = attempt;
        rec.started_at = first_started;
        storage::AttemptRecord att{
            run_id(), slot.key,     attempt,    started,          ended,
            outcome,  std::nullopt, dump(logs), engine.worker_id, state.run.attempt};
        return {std::move(rec), std::move(att)};
    }

    // A step in a transaction that ran past its timeout: its writes are rolled back.
    struct TimedOut {};

    // Runs `fn(tx)` in a transaction of its own that also writes the step's record (and the
    // record of the step before it, if unwritten) behind the lease's fence: the writes and
    // the records commit together or not at all. What `fn` throws rolls it all back and
    // reaches the caller, as does TimedOut, or LeaseLost when the fence fails. The fence
    // is checked with the records, after `fn`: a lost lease is rare, and a rollback undoes
    // `fn`'s writes as well as checking first would have prevented them.
    json commit_step(const Slot& slot, const std::function<json(Transaction&)>& fn, int attempt,
                     std::int64_t first_started, std::int64_t started,
                     std::optional<milliseconds> timeout) {
        json out;
        std::string run_status;
        const bool carried = unwritten.has_value();
        engine.db.transact([&](Transaction& tx) {
            out = fn(tx);
            const std::int64_t ended = now();
            if (timeout && ended - started > timeout->count()) throw TimedOut{};
            auto [rec, att] =
                step_written(slot, attempt, first_started, started, ended, "completed");
            rec.output = dump(out);
            rec.ended_at = ended;
            auto write = [&](const StepRecord& r, const storage::AttemptRecord& a) {
                storage::RunWrite w{&lease, &r, &a};
                storage::RunWrite* const one[] = {&w};
                engine.store.write_runs(tx, one);
                if (!w.held) {
                    ++engine.leases_lost;
                    throw LeaseLost{};
                }
                run_status = w.run_status;
            };
            if (unwritten) write(unwritten->step, unwritten->attempt);
            write(rec, att);
        });
        status = run_status;
        unwritten.reset();
        if (carried) engine.maybe_crash();  // two records committed: count both
        return out;
    }

    // A step (Context::step), or with `in_tx` a step in a transaction (Context::transaction):
    // `in_tx(tx)`'s writes, the step's record and the record of the step before it commit
    // together (commit_step), so the step before's record is not written first.
    json run_step(std::string_view name, const std::function<json()>& fn,
                  const std::function<json(Transaction&)>* in_tx, const StepOptions& options) {
        const Slot slot = next(name, "step", in_tx == nullptr);
        const RetryPolicy policy = options.retry.value_or(wf.retry);
        const auto timeout = options.timeout ? options.timeout : wf.step_timeout;
        int prior = 0;
        std::optional<std::int64_t> first_started;
        if (slot.stored) {
            flush();
            const StepRecord& s = *slot.stored;
            if (s.status == "completed") return parse_or_null(s.output);
            if (s.status == "failed") throw StepFailed(slot.key, parse_or_null(s.error));
            if (s.wake_at && now() < *s.wake_at) suspend_until(*s.wake_at);
            prior = static_cast<int>(s.attempts);
            first_started = s.started_at;
        }
        boundary();

        const int attempt = prior + 1;
        const std::int64_t started = now();
        current_attempt = attempt;
        logs = json::array();
        json out;
        std::optional<json> error;
        std::optional<milliseconds> retry_after;
        bool retriable = true;
        bool timed_out = false;
        try {
            if (in_tx) {
                out = commit_step(slot, *in_tx, attempt, first_started.value_or(started), started,
                                  timeout);
                current_attempt = 0;
                ++engine.steps_run;
                engine.observe_step(wf.id, now() - started);
                engine.maybe_crash();
                return out;
            }
            out = fn();
        } catch (const Signal&) {
            current_attempt = 0;
            throw;
        } catch (const TimedOut&) {
            timed_out = true;
        } catch (const NonRetriableError& e) {
            error = error_json("non_retriable", e.what());
            retriable = false;
        } catch (const RetryAfterError& e) {
            error = error_json("retry_after", e.what());
            retry_after = e.delay();
        } catch (const std::exception& e) {
            error = error_json("error", e.what());
        } catch (...) {
            error = error_json("error", "unknown exception");
        }
        current_attempt = 0;
        ++engine.steps_run;
        const std::int64_t ended = now();
        engine.observe_step(wf.id, ended - started);
        std::string outcome = error ? "failed" : "completed";
        if (!error && (timed_out || (timeout && ended - started > timeout->count()))) {
            error = error_json("timeout", fmt::format("step ran {} ms, over its {} ms timeout",
                                                      ended - started, timeout->count()));
            outcome = "timed_out";
        }

        auto [rec, att] =
            step_written(slot, attempt, first_started.value_or(started), started, ended, outcome);
        if (!error) {
            rec.output = dump(out);
            rec.ended_at = ended;
            unwritten.emplace(Unwritten{std::move(rec), std::move(att)});
            return out;
        }
        flush();  // a step in a transaction left it: its commit did not happen

        (*error)["attempt"] = attempt;
        rec.error = dump(*error);
        att.error = rec.error;
        if (!retriable || attempt >= policy.max_attempts) {
            rec.status = "failed";
            rec.ended_at = ended;
            write(rec, &att);
            throw StepFailed(slot.key, *error);
        }
        const std::int64_t wake =
            ended + (retry_after ? *retry_after : engine.retry_delay(policy, attempt)).count();
        rec.status = "retrying";
        rec.wake_at = wake;
        ++engine.retries;
        engine.fenced(lease, [&](Transaction& tx) {
            engine.store.write_step(tx, rec);
            engine.store.write_attempt(tx, att);
            engine.store.set_run_status(tx, run_id(), run_status::kQueued, ended);
            engine.store.release(tx, lease, wake);
        });
        engine.due_again(wake);
        throw Suspend{};
    }

    void sleep_until(std::string_view name, std::int64_t until) {
        const Slot slot = next(name, "sleep");
        if (slot.stored) {
            StepRecord s = *slot.stored;
            if (s.status == "completed") return;
            const std::int64_t wake = s.wake_at.value_or(0);
            if (now() < wake) suspend_until(wake);
            s.status = "completed";
            s.ended_at = now();
            write(s);
            return;
        }
        boundary();
        StepRecord rec = record(slot, "sleep", "sleeping");
        rec.output = dump(json{{"until", until}});
        if (until <= now()) {
            rec.status = "completed";
            rec.ended_at = now();
            write(rec);
            return;
        }
        rec.wake_at = until;
        engine.fenced(lease, [&](Transaction& tx) {
            engine.store.write_step(tx, rec);
            engine.store.set_run_status(tx, run_id(), run_status::kSleeping, now());
            engine.store.release(tx, lease, until);
        });
        engine.due_again(until);
        throw Suspend{};
    }

    std::optional<json> wait_for_event(std::string_view name, std::string_view event_name,
                                       std::string_view match_field, milliseconds timeout) {
        const Slot slot = next(name, "wait");
        auto result = [](const std::optional<std::string>& output) -> std::optional<json> {
            json j = parse_or_null(output);
            if (j.is_null()) return std::nullopt;
            return j;
        };
        if (slot.stored) {
            const StepRecord& s = *slot.stored;
            if (s.status == "completed") return result(s.output);
            if (s.status == "failed") throw StepFailed(slot.key, parse_or_null(s.error));
            const std::int64_t expires = s.wake_at.value_or(0);
            if (now() < expires) suspend_until(expires);
            bool timed_out = false;
            engine.fenced(lease, [&](Transaction& tx) {
                timed_out = engine.store.complete_waiting_step(tx, run_id(), slot.key, "null",
                                                               std::nullopt, now());
            });
            if (timed_out) return std::nullopt;
            // The event arrived just before the timeout was recorded: use it.
            for (const auto& step : engine.store.steps(run_id())) {
                if (step.key == slot.key) return result(step.output);
            }
            return std::nullopt;
        }
        boundary();
        const json field = lookup(event, match_field);
        StepRecord rec = record(slot, "wait", "waiting");
        rec.wake_at = now() + timeout.count();
        storage::WaitRecord w{
            run_id(),
            slot.key,
            std::string(event_name),
            std::string(match_field),
            field.is_null() ? std::nullopt : std::optional<std::string>(dump(field)),
            *rec.wake_at};
        engine.fenced(lease, [&](Transaction& tx) {
            engine.store.write_step(tx, rec);
            engine.store.add_wait(tx, w);
            engine.store.set_run_status(tx, run_id(), run_status::kWaiting, now());
            engine.store.release(tx, lease, *rec.wake_at);
        });
        engine.due_again(*rec.wake_at);
        throw Suspend{};
    }

    std::string send_event(std::string_view name, const json& ev) {
        const Slot slot = next(name, "send");
        if (slot.stored && slot.stored->status == "completed") {
            return parse_or_null(slot.stored->output).value("event_id", std::string());
        }
        boundary();
        if (!ev.is_object() || !ev.contains("name") || !ev["name"].is_string()) {
            throw std::invalid_argument(
                fmt::format("send_event '{}': the event needs a string \"name\"", name));
        }
        EventInput in;
        in.name = ev["name"].get<std::string>();
        in.data = ev.value("data", json::object());
        in.idempotency_key = fmt::format("{}/{}", run_id(), slot.key);
        StepRecord rec = record(slot, "send", "completed");
        rec.ended_at = now();
        SendResult sent;
        engine.fenced(lease, [&](Transaction& tx) {
            sent = engine.send(tx, in);
            rec.output = dump(json{{"event_id", sent.event_id}, {"run_ids", sent.run_ids}});
            engine.store.write_step(tx, rec);
        });
        engine.announce();
        return sent.event_id;
    }

    json invoke(std::string_view name, std::string_view workflow_id, const json& data) {
        const Slot slot = next(name, "invoke");
        if (slot.stored) {
            const StepRecord& s = *slot.stored;
            if (s.status == "completed") return parse_or_null(s.output);
            if (s.status == "failed") throw StepFailed(slot.key, parse_or_null(s.error));
            suspend_until(s.wake_at.value_or(now() + kInvokeSafetyNetMs));
        }
        boundary();
        StepRecord rec = record(slot, "invoke", "waiting");
        const Workflow* child = nullptr;
        if (auto it = engine.workflows.find(workflow_id); it != engine.workflows.end())
            child = &it->second;
        if (child == nullptr) {
            const json error = error_json(
                "unknown_workflow", fmt::format("no workflow '{}' is registered", workflow_id));
            rec.status = "failed";
            rec.error = dump(error);
            rec.ended_at = now();
            write(rec);
            throw StepFailed(slot.key, error);
        }
        rec.wake_at = now() + kInvokeSafetyNetMs;
        engine.fenced(lease, [&](Transaction& tx) {
            storage::NewEvent e;
            e.name = "cairn/invoke";
            e.data = dump(data);
            e.idempotency_key = fmt::format("{}/{}", run_id(), slot.key);
            storage::NewRun run{child->id, child->version, 0, run_id(), slot.key};
            auto ins = engine.store.insert_event(tx, e, std::span(&run, 1), now());
            rec.output = dump(json{{"child_run_id", ins.run_ids.empty() ? "" : ins.run_ids[0]}});
            engine.store.write_step(tx, rec);
            engine.store.set_run_status(tx, run_id(), run_status::kWaiting, now());
            engine.store.release(tx, lease, *rec.wake_at);
        });
        engine.announce();
        throw Suspend{};
    }

    // ---- endings ----

    void complete_parent(Transaction& tx, const std::optional<std::string>& output,
                         const std::optional<std::string>& error) {
        if (!state.run.parent_run_id || !state.run.parent_step_key) return;
        engine.store.complete_waiting_step(tx, *state.run.parent_run_id, *state.run.parent_step_key,
                                           output, error, now());
        storage::RunStore::notify(tx);
    }

    // The end of a run with no parent to tell nor handler to start: a record, batched with
    // other runs' writes.
    void finish_alone(std::string_view final_status, std::optional<std::string> output,
                      std::optional<std::string> error) {
        const storage::RunEnd end{std::string(final_status), std::move(output), std::move(error),
                                  now()};
        storage::RunWrite w{&lease, nullptr, nullptr, &end};
        if (unwritten) {  // the last step commits with the end
            w.step = &unwritten->step;
            w.attempt = &unwritten->attempt;
        }
        engine.write_record(w);
        if (unwritten) engine.maybe_crash();
        unwritten.reset();
    }

    void finish_completed(const json& output) {
        const std::string text = dump(output);
        if (!state.run.parent_run_id) return finish_alone(run_status::kCompleted, text, {});
        flush();
        engine.fenced(lease, [&](Transaction& tx) {
            engine.store.finish_run(tx, lease, run_status::kCompleted, text, std::nullopt, now());
            complete_parent(tx, text, std::nullopt);
        });
        if (state.run.parent_run_id) engine.wake_local();
    }

    void finish_failed(json error) {
        const std::string text = dump(error);
        if (!state.run.parent_run_id && !wf.on_failure)
            return finish_alone(run_status::kFailed, {}, text);
        flush();
        engine.fenced(lease, [&](Transaction& tx) {
            engine.store.finish_run(tx, lease, run_status::kFailed, std::nullopt, text, now());
            complete_parent(tx, std::nullopt, text);
            if (wf.on_failure) {
                storage::NewEvent e;
                e.name = "cairn/run.failed";
                e.data = dump(json{{"run_id", run_id()},
                                   {"workflow_id", wf.id},
                                   {"error", error},
                                   {"event", event}});
                e.idempotency_key = fmt::format("{}/on-failure", run_id());
                storage::NewRun handler = new_run(wf.id + "/on-failure", wf.version);
                engine.store.insert_event(tx, e, std::span(&handler, 1), now());
            }
        });
        engine.announce();
    }

    void finish_cancelled() {
        flush();
        engine.fenced(lease, [&](Transaction& tx) {
            engine.store.finish_run(tx, lease, run_status::kCancelled, std::nullopt, std::nullopt,
                                    now());
            complete_parent(tx, std::nullopt,
                            dump(error_json("cancelled", "the invoked run was cancelled")));
        });
    }
};

}  // namespace detail

void Engine::Impl::execute(const Lease& lease, const std::shared_ptr<std::atomic<bool>>& lost,
                           std::optional<storage::RunState> state) {
    ++executions;
    try {
        if (!state) state = store.load(lease.run_id);
        if (!state || is_final(state->run.status)) {
            fenced(lease, [&](Transaction& tx) { store.release(tx, lease, std::nullopt); });
            return;
        }
    } catch (const detail::Signal&) {
        return;
    } catch (const std::exception& e) {
        spdlog::error("run {}: cannot load: {}", lease.run_id, e.what());
        return;  // the lease expires and the run is retried elsewhere
    }

    auto it = workflows.find(state->run.workflow_id);
    if (it == workflows.end()) {
        try {
            const auto error = dump(error_json(
                "unknown_workflow", fmt::format("workflow '{}' is not registered in worker {}",
                                                state->run.workflow_id, worker_id)));
            fenced(lease, [&](Transaction& tx) {
                store.finish_run(tx, lease, run_status::kFailed, std::nullopt, error, now());
            });
            ended();
        } catch (...) {
        }
        return;
    }

    detail::Execution ex(*this, lease, std::move(*state), it->second, lost);
    auto finish = [&](auto&& fn) {
        try {
            fn();
            ended();
        } catch (const detail::LeaseLost&) {
            spdlog::info("run {}: lease lost while finishing; another worker owns it",
                         lease.run_id);
        } catch (const detail::Infrastructure& e) {
            spdlog::error("run {}: could not record the outcome: {}", lease.run_id, e.message);
        }
    };
    try {
        // The claim already marked the run running (RunStore::claim).
        if (!ex.state.run.started_at) ex.state.run.started_at = now();
        Context ctx(ex);
        const json output = it->second.fn(ctx);
        finish([&] { ex.finish_completed(output); });
    } catch (const detail::Suspend&) {
    } catch (const detail::LeaseLost&) {
        spdlog::info("run {}: lease lost; another worker owns it now", lease.run_id);
    } catch (const detail::Cancelled&) {
        finish([&] { ex.finish_cancelled(); });
    } catch (const detail::RunTimedOut& t) {
        finish([&] {
            ex.finish_failed(
                error_json("timeout", fmt::format("run exceeded its {} ms timeout", t.limit_ms)));
        });
    } catch (const detail::Infrastructure& e) {
        spdlog::error("run {}: database error; the run resumes when its lease expires: {}",
                      lease.run_id, e.message);
    } catch (const StepFailed& e) {
        finish([&] { ex.finish_failed(e.error()); });
    } catch (const NonDeterministicError& e) {
        finish([&] { ex.finish_failed(error_json("non_deterministic", e.what())); });
    } catch (const std::exception& e) {
        finish([&] { ex.finish_failed(error_json("workflow_error", e.what())); });
    } catch (const detail::Signal&) {
    } catch (...) {
        finish([&] { ex.finish_failed(error_json("workflow_error", "unknown exception")); });
    }
}

// ---- Context ----------------------------------------------------------------------------------

}  // namespace engine

json Context::run_step(std::string_view name, const std::function<json()>& fn,
                       const StepOptions& options) {
    return ex_.run_step(name, fn, nullptr, options);
}

json Context::run_transaction(std::string_view name,
                              const std::function<json(storage::Transaction&)>& fn,
                              const StepOptions& options) {
    return ex_.run_step(name, {}, &fn, options);
}
void Context::sleep(std::string_view name, milliseconds duration) {
    // The wake time is fixed when the sleep is first recorded; replays reuse it.
    ex_.sleep_until(name, ex_.now() + duration.count());
}
void Context::sleep_until(std::string_view name, std::int64_t unix_ms) {
    ex_.sleep_until(name, unix_ms);
}
std::optional<json> Context::wait_for_event(std::string_view name, std::string_view event_name,
                                            std::string_view match_field, milliseconds timeout) {
    return ex_.wait_for_event(name, event_name, match_field, timeout);
}
std::string Context::send_event(std::string_view name, const json& event) {
    return ex_.send_event(name, event);
}
json Context::invoke(std::string_view name, std::string_view workflow_id, const json& data) {
    return ex_.invoke(name, workflow_id, data);
}
const std::string& Context::run_id() const {
    return ex_.run_id();
}
const json& Context::event() const {
    return ex_.event;
}
int Context::attempt() const {
    return ex_.current_attempt;
}
void Context::log(std::string_view line) {
    spdlog::info("run {}: {}", ex_.run_id(), line);
    if (ex_.current_attempt != 0) ex_.logs.push_back(std::string(line));
}

namespace engine {

// ---- Engine -----------------------------------------------------------------------------------

Engine::Engine(storage::Database& db, const Clock& clock)
    : impl_(std::make_unique<Impl>(db, clock)) {
    if (const char* crash =
            std::getenv("CAIRN_CRASH_AFTER_STEPS")) {  // NOLINT(concurrency-mt-unsafe)
        impl_->crash_after = std::atoll(crash);
    }
}

Engine::~Engine() {
    stop();
    impl_->stop_alone_writers();
}

void Engine::add(Workflow w) {
    if (w.id.empty()) throw std::invalid_argument("workflow id must not be empty");
    if (!w.fn) throw std::invalid_argument(fmt::format("workflow '{}' has no function", w.id));
    if (impl_->workflows.contains(w.id))
        throw std::invalid_argument(fmt::format("workflow '{}' is registered twice", w.id));
    if (w.retry.max_attempts < 1)
        throw std::invalid_argument(fmt::format("workflow '{}': max_attempts must be >= 1", w.id));
    for (const auto& t : w.triggers) impl_->triggers[t].push_back(w.id);
    if (w.on_failure) {
        Workflow handler;
        handler.id = w.id + "/on-failure";
        handler.version = w.version;
        handler.retry = w.retry;
        handler.fn = w.on_failure;
        impl_->workflows.emplace(handler.id, std::move(handler));
    }
    impl_->workflows.emplace(w.id, std::move(w));
}

const Workflow* Engine::find(std::string_view id) const {
    auto it = impl_->workflows.find(id);
    return it == impl_->workflows.end() ? nullptr : &it->second;
}

std::vector<const Workflow*> Engine::workflows() const {
    std::vector<const Workflow*> out;
    for (const auto& [id, w] : impl_->workflows) out.push_back(&w);
    return out;
}

SendResult Engine::send(storage::Transaction& tx, const EventInput& event) {
    return impl_->send(tx, event);
}

SendResult Engine::send(const EventInput& event) {
    return send(event, Riders{});
}

SendResult Engine::send(const EventInput& event, const Riders& riders) {
    return send(event, riders, storage::OnlyIf{});
}

SendResult Engine::send(const EventInput& event, const Riders& riders,
                        const storage::OnlyIf& only_if) {
    return impl_->send_blocking(event, riders, only_if);
}

void Engine::send(EventInput event, Riders riders, storage::OnlyIf only_if, SendDone done) {
    impl_->send_later(std::move(event), std::move(riders), std::move(only_if), done);
}

void Engine::wake() {
    impl_->announce();
}

bool Engine::cancel(std::string_view run_id) {
    return impl_->store.cancel_run(run_id, impl_->now());
}

storage::RunStore::RetryResult Engine::retry(std::string_view run_id) {
    auto r = impl_->store.retry_run(run_id, impl_->now());
    if (r == storage::RunStore::RetryResult::ok) impl_->wake_local();
    return r;
}

std::variant<std::string, storage::RunStore::ReplayError> Engine::replay(
    std::string_view run_id, const std::optional<std::string>& from_step) {
    auto run = impl_->store.get_run(run_id);
    if (!run) return storage::RunStore::ReplayError::not_found;
    // The replay runs the code registered now, so it records that version.
    const Workflow* w = find(run->workflow_id);
    auto r =
        impl_->store.replay_run(run_id, w ? w->version : run->version, from_step, impl_->now());
    if (std::holds_alternative<std::string>(r)) impl_->wake_local();
    return r;
}

int Engine::run_until_idle(int max_executions) {
    int count = 0;
    const auto lease_ms = std::max<std::int64_t>(impl_->options.lease.count(), 30'000);
    while (count < max_executions) {
        auto claims = impl_->store.claim_runs(impl_->worker_id, 16, impl_->now(), lease_ms);
        if (claims.empty()) break;
        for (auto& c : claims) {
            impl_->execute(c.lease, std::make_shared<std::atomic<bool>>(false), std::move(c.state));
            ++count;
        }
    }
    return count;
}

void Engine::start(WorkerOptions options) {
    Impl& im = *impl_;
    if (!im.threads.empty()) throw std::logic_error("Engine::start called twice");
    if (options.threads < 1) throw std::invalid_argument("worker threads must be >= 1");
    if (!options.worker_id.empty()) im.worker_id = options.worker_id;
    im.options = options;
    im.stopping = false;
    im.free_slots = options.threads;
    im.listener = im.db.listen(storage::RunStore::kQueueChannel, [&im](std::string_view from) {
        if (from != im.instance) im.wake_local();
    });
    im.gc_writer_stopping = false;
    for (int i = 0; i < Impl::default_leaders(im.db.backend()); ++i) {
        im.gc_writer.emplace_back([&im] {
            name_this_thread("cairn-writer");
            set_batch_scheduling(false);
            im.writer_loop();
        });
    }
    {
        std::lock_guard lock(im.gc_mu);
        im.gc_writers_live = true;
    }

    // Dispatcher: claims as many due runs as there are idle worker threads.
    im.threads.emplace_back([&im] {
        name_this_thread("cairn-dispatch");
        std::unique_lock lock(im.mu);
        while (!im.stopping) {
            const int want = im.idle_slots();
            if (want > 0) {
                lock.unlock();
                std::vector<storage::Claim> got;
                try {
                    got = im.claim(want);
                } catch (const std::exception& e) {
                    spdlog::warn("claim failed: {}", e.what());
                }
                lock.lock();
                for (auto& c : got) {
                    im.active[c.lease.run_id] = {c.lease, std::make_shared<std::atomic<bool>>(false)};
                    im.ready.push_back(std::move(c));
                }
                for (std::size_t i = 0; i < got.size(); ++i) im.cv.notify_one();
                im.more_due = static_cast<int>(got.size()) == want;
                if (im.more_due) continue;  // there may be more
            }
            // Until woken, the poll, or the time a suspended run is due (which may move
            // earlier meanwhile).
            while (!im.wake && !im.stopping) {
                auto wait = im.options.poll;
                if (im.next_due != std::numeric_limits<std::int64_t>::max())
                    wait = std::clamp(milliseconds(im.next_due - im.now()), milliseconds(0), wait);
                im.retimed = false;
                if (!im.dispatch_cv.wait_for(
                        lock, wait, [&im] { return im.stopping.load() || im.wake || im.retimed; }))
                    break;  // timed out
            }
            im.wake = false;
            if (im.next_due <= im.now()) {  // a suspended run is due: claim now, and again
                im.next_due = std::numeric_limits<std::int64_t>::max();  // as workers free up
                im.more_due = true;
            }
        }
    });

    // Keeper: renews every claimed lease well before it expires and, on Postgres, keeps
    // the planner's statistics in step with tables that grow (analyze_grown_tables).
    im.threads.emplace_back([&im] {
        name_this_thread("cairn-keeper");
        std::unique_lock lock(im.mu);
        const auto every = std::max(milliseconds(10), im.options.lease / 3);
        constexpr auto kStatistics = std::chrono::seconds(1);
        const bool statistics = im.db.backend() == storage::Backend::postgres;
        auto next_renewal = std::chrono::steady_clock::now() + every;
        auto next_statistics = std::chrono::steady_clock::now() + kStatistics;
        while (!im.stopping) {
            const auto next = statistics ? std::min(next_renewal, next_statistics) : next_renewal;
            im.keeper_cv.wait_until(lock, next, [&im] { return im.stopping.load(); });
            if (im.stopping) break;
            const auto now = std::chrono::steady_clock::now();
            if (statistics && now >= next_statistics) {
                next_statistics = now + kStatistics;
                lock.unlock();
                try {
                    if (auto t = im.db.analyze_grown_tables(); !t.empty())
                        spdlog::debug("analysed grown tables: {}", fmt::join(t, ", "));
                } catch (const std::exception& e) {
                    spdlog::debug("analysing grown tables failed: {}", e.what());
                }
                lock.lock();
            }
            if (now < next_renewal) continue;
            next_renewal = now + every;
            std::vector<std::pair<Lease, std::shared_ptr<std::atomic<bool>>>> held;
            for (auto& [id, a] : im.active) held.emplace_back(a.lease, a.lost);
            lock.unlock();
            for (auto& [lease, lost] : held) {
                try {
                    if (!im.store.renew(lease, im.now(), im.options.lease.count()))
                        lost->store(true);
                } catch (const std::exception& e) {
                    spdlog::warn("lease renewal for run {} failed: {}", lease.run_id, e.what());
                }
            }
            lock.lock();
        }
    });

    for (int i = 0; i < options.threads; ++i) {
        im.threads.emplace_back([&im] {
            name_this_thread("cairn-worker");
            set_batch_scheduling(true);
            std::unique_lock lock(im.mu);
            for (;;) {
                im.cv.wait(lock, [&im] { return im.stopping.load() || !im.ready.empty(); });
                if (im.ready.empty()) break;  // stopping
                storage::Claim claimed = std::move(im.ready.front());
                im.ready.pop_front();
                const Lease lease = claimed.lease;
                if (im.stopping) {  // claimed but never started: give it straight back
                    im.active.erase(lease.run_id);
                    lock.unlock();
                    try {
                        im.store.release(lease, im.now());
                    } catch (...) {
                    }
                    lock.lock();
                    continue;
                }
                auto lost = im.active[lease.run_id].lost;
                --im.free_slots;
                lock.unlock();
                im.execute(lease, lost, std::move(claimed.state));
                lock.lock();
                ++im.free_slots;
                im.active.erase(lease.run_id);
                if (im.more_due) {
                    im.wake = true;
                    im.dispatch_cv.notify_one();
                }
            }
        });
    }
    spdlog::info("worker {} started: {} threads, lease {} ms", im.worker_id, options.threads,
                 options.lease.count());
}

void Engine::stop() {
    Impl& im = *impl_;
    if (im.threads.empty() && im.gc_writer.empty()) return;
    {
        std::lock_guard lock(im.mu);
        im.stopping = true;
    }
    im.cv.notify_all();
    im.dispatch_cv.notify_all();
    im.keeper_cv.notify_all();
    for (auto& t : im.threads) t.join();
    im.threads.clear();
    if (!im.gc_writer.empty()) {  // after the workers: they write what the workers queued
        {
            std::lock_guard lock(im.gc_mu);
            im.gc_writers_live = false;
            im.gc_writer_stopping = true;
        }
        im.gc_writer_cv.notify_all();
        for (auto& t : im.gc_writer) t.join();
        im.gc_writer.clear();
    }
    im.listener.reset();
    spdlog::info("worker {} stopped", im.worker_id);
}

void Engine::set_group_commit(bool on) {
    impl_->gc_max_leaders = on ? Impl::default_leaders(impl_->db.backend()) : 0;
}

EngineStats Engine::stats() const {
    EngineStats out;
    out.executions = impl_->executions.load();
    out.steps_run = impl_->steps_run.load();
    out.leases_lost = impl_->leases_lost.load();
    out.retries = impl_->retries.load();
    std::lock_guard lock(impl_->histograms_mu);
    for (const auto& [id, h] : impl_->step_seconds) out.step_seconds[id] = h->snapshot();
    out.group_commits = impl_->gc_batches.load();
    out.grouped_writes = impl_->gc_writes.load();
    out.writer_cpu_ns = impl_->gc_writer_cpu_ns.load();
    std::lock_guard ended_lock(impl_->ended_mu);
    out.runs_ended = impl_->runs_ended;
    return out;
}

std::int64_t Engine::await_runs_ended(std::int64_t seen, std::chrono::milliseconds timeout) {
    Impl& im = *impl_;
    std::unique_lock lock(im.ended_mu);
    im.ended_cv.wait_for(lock, timeout, [&] { return im.runs_ended > seen; });
    return im.runs_ended;
}
storage::RunStore& Engine::store() {
    return impl_->store;
}
const Clock& Engine::clock() const {
    return impl_->clock;
}
const std::string& Engine::worker_id() const {
    return impl_->worker_id;
}
void Engine::set_crash_after_steps(std::int64_t n) {
    impl_->crash_after = n;
}

}  // namespace engine
}  // namespace cairn
