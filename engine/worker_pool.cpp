#include "engine/detail/worker_pool.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <stdexcept>

#include "common/threads.hpp"

namespace cairn::engine::detail {

using std::chrono::milliseconds;

WorkerPool::WorkerPool(storage::Database& db, storage::RunStore& store, const Clock& clock,
                       std::string instance)
    : db_(db),
      store_(store),
      clock_(clock),
      instance_(std::move(instance)),
      worker_id_(instance_),
      notifier_(db.notifier(storage::RunStore::kQueueChannel, instance_)) {}

WorkerPool::~WorkerPool() {
    stop();
}

void WorkerPool::start(const WorkerOptions& options, Execute execute) {
    if (running()) throw std::logic_error("Engine::start called twice");
    if (options.threads < 1) throw std::invalid_argument("worker threads must be >= 1");
    options_ = options;
    if (!options.worker_id.empty()) worker_id_ = options.worker_id;
    execute_ = std::move(execute);
    stopping_ = false;
    {
        std::lock_guard lock(mu_);
        free_slots_ = options.threads;
        more_due_ = true;
    }
    listener_ = db_.listen(storage::RunStore::kQueueChannel, [this](std::string_view from) {
        if (from != instance_) wake_local();
    });
    threads_.emplace_back([this] { dispatch_loop(); });
    for (int i = 0; i < options.threads; ++i) threads_.emplace_back([this] { worker_loop(); });
    running_ = true;
}

void WorkerPool::stop() {
    if (!running()) return;
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
    }
    work_cv_.notify_all();
    dispatch_cv_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
    listener_.reset();
    running_ = false;
}

void WorkerPool::due_again(std::int64_t at) {
    {
        std::lock_guard lock(mu_);
        if (at >= next_due_) return;
        next_due_ = at;
        retimed_ = true;
    }
    dispatch_cv_.notify_one();
}

void WorkerPool::wake_local() {
    {
        std::lock_guard lock(mu_);
        wake_ = true;
        more_due_ = true;
    }
    dispatch_cv_.notify_one();
}

void WorkerPool::announce() {
    wake_local();
    if (notifier_) notifier_->notify();
}

int WorkerPool::idle_slots() const {
    return free_slots_ - static_cast<int>(ready_.size()) - promised_;
}

std::vector<Held> WorkerPool::held() const {
    std::lock_guard lock(mu_);
    std::vector<Held> out;
    for (const auto& [id, h] : active_) out.push_back(h);
    return out;
}

WorkerPool::Promise::Promise(WorkerPool& pool, int runs) : pool_(&pool) {
    if (runs <= 0 || !pool.running()) return;
    std::lock_guard lock(pool.mu_);
    if (pool.stopping_ || pool.idle_slots() < runs) return;
    pool.promised_ += runs;
    n_ = runs;
}

storage::ClaimedBy WorkerPool::Promise::claimed_by() const {
    return {pool_->worker_id_, pool_->clock_.now_ms() + pool_->options_.lease.count(), {}};
}

void WorkerPool::Promise::keep(std::vector<storage::Claim> claims) {
    if (n_ > 0) pool_->hand_over(std::exchange(n_, 0), std::move(claims));
}

// Ends a promise of `promised` idle threads: its claimed runs (as many, or none when the
// send wrote none claimed) go to them, or back to the queue when the pool is stopping.
void WorkerPool::hand_over(int promised, std::vector<storage::Claim> claims) {
    std::vector<storage::Lease> back;
    {
        std::lock_guard lock(mu_);
        promised_ -= promised;
        for (auto& c : claims) {
            if (stopping_) {
                back.push_back(c.lease);
                continue;
            }
            active_[c.lease.run_id] = {c.lease, std::make_shared<std::atomic<bool>>(false)};
            ready_.push_back(std::move(c));
            work_cv_.notify_one();
        }
    }
    for (const storage::Lease& l : back) {
        try {
            store_.release(l, clock_.now_ms());
        } catch (const std::exception& e) {
            spdlog::warn("giving back run {} failed: {}", l.run_id, e.what());
        }
    }
}

void WorkerPool::dispatch_loop() {
    name_this_thread("cairn-dispatch");
    std::unique_lock lock(mu_);
    while (!stopping_) {
        const int want = idle_slots();
        if (want > 0) {
            lock.unlock();
            std::optional<std::int64_t> admit_next;
            if (admit_) {
                try {
                    admit_next = admit_(clock_.now_ms(), want);
                } catch (const std::exception& e) {
                    spdlog::warn("admission failed: {}", e.what());
                }
            }
            std::vector<storage::Claim> got;
            try {
                got = store_.claim_runs(worker_id_, want, clock_.now_ms(), options_.lease.count());
            } catch (const std::exception& e) {
                spdlog::warn("claim failed: {}", e.what());
            }
            lock.lock();
            if (admit_next && *admit_next < next_due_) next_due_ = *admit_next;
            for (auto& c : got) {
                active_[c.lease.run_id] = {c.lease, std::make_shared<std::atomic<bool>>(false)};
                ready_.push_back(std::move(c));
            }
            for (std::size_t i = 0; i < got.size(); ++i) work_cv_.notify_one();
            more_due_ = static_cast<int>(got.size()) == want;
            if (more_due_) continue;  // there may be more
        }
        // Until woken, the poll, or the time a suspended run is due (which may move
        // earlier meanwhile).
        while (!wake_ && !stopping_) {
            auto wait = options_.poll;
            if (next_due_ != std::numeric_limits<std::int64_t>::max())
                wait = std::clamp(milliseconds(next_due_ - clock_.now_ms()), milliseconds(0), wait);
            retimed_ = false;
            if (!dispatch_cv_.wait_for(lock, wait,
                                       [this] { return stopping_.load() || wake_ || retimed_; }))
                break;  // timed out
        }
        wake_ = false;
        if (next_due_ <= clock_.now_ms()) {  // a suspended run is due: claim now, and again
            next_due_ = std::numeric_limits<std::int64_t>::max();  // as workers free up
            more_due_ = true;
        }
    }
}

void WorkerPool::worker_loop() {
    name_this_thread("cairn-worker");
    // Many workers, one writer: a worker that wakes does not preempt the writer thread
    // whose commit woke it.
    set_batch_scheduling(true);
    std::unique_lock lock(mu_);
    for (;;) {
        work_cv_.wait(lock, [this] { return stopping_.load() || !ready_.empty(); });
        if (ready_.empty()) break;  // stopping
        storage::Claim claimed = std::move(ready_.front());
        ready_.pop_front();
        const storage::Lease lease = claimed.lease;
        if (stopping_) {  // claimed but never started: give it straight back
            active_.erase(lease.run_id);
            lock.unlock();
            try {
                store_.release(lease, clock_.now_ms());
            } catch (const std::exception& e) {
                spdlog::warn("giving back run {} failed: {}", lease.run_id, e.what());
            }
            lock.lock();
            continue;
        }
        const Held held = active_[lease.run_id];
        --free_slots_;
        lock.unlock();
        execute_(held, std::move(claimed.state));
        lock.lock();
        ++free_slots_;
        active_.erase(lease.run_id);
        if (more_due_ || (admitting_ && admitting_())) {
            wake_ = true;
            dispatch_cv_.notify_one();
        }
    }
}

}  // namespace cairn::engine::detail
