#include "storage/write_batcher.hpp"

#include <algorithm>
#include <system_error>
#include <utility>

#include "common/threads.hpp"
#include "storage/database.hpp"

namespace cairn::storage {

WriteBatcher::WriteBatcher(Database& db, Options options) : db_(db), options_(options) {}

WriteBatcher::~WriteBatcher() {
    std::vector<std::thread> writers;
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
        writers.swap(writers_);
    }
    writer_cv_.notify_all();
    for (auto& t : writers) t.join();
}

void WriteBatcher::write(BatchedWrite& w) {
    std::condition_variable done;
    std::unique_lock lock(mu_);
    w.waiter_ = &done;
    w.on_done_ = nullptr;
    enqueue(lock, w);
    done.wait(lock, [&w] { return w.done_; });
}

void WriteBatcher::submit(BatchedWrite& w, std::function<void()> done) {
    std::unique_lock lock(mu_);
    w.waiter_ = nullptr;
    w.on_done_ = std::move(done);
    enqueue(lock, w);
}

void WriteBatcher::enqueue(std::unique_lock<std::mutex>& lock, BatchedWrite& w) {
    w.done_ = false;
    w.error = nullptr;
    if (queue_.empty() && in_flight_ < options_.in_flight) {
        ++in_flight_;
        lock.unlock();
        BatchedWrite* const one[] = {&w};
        commit(one);  // `w` may be gone once published
        lock.lock();
        --in_flight_;
        if (due()) writer_cv_.notify_one();  // queued meanwhile
        return;
    }
    if (writers_.empty() && !start_writers()) {
        // No thread to be had (resources exhausted): written on its caller's thread, a
        // batch of one beside the others in flight.
        ++in_flight_;
        lock.unlock();
        BatchedWrite* const one[] = {&w};
        commit(one);
        lock.lock();
        --in_flight_;
        return;
    }
    queue_.push_back(&w);
    if (due()) writer_cv_.notify_one();
}

// Called with mu_ held.
bool WriteBatcher::due() const {
    return !queue_.empty() && in_flight_ < options_.in_flight;
}

// Called with mu_ held. Whether a writer thread runs: those that started write the queue.
bool WriteBatcher::start_writers() {
    try {
        while (writers_.size() < options_.in_flight)
            writers_.emplace_back([this] { writer_loop(); });
    } catch (const std::system_error&) {
    }
    return !writers_.empty();
}

void WriteBatcher::writer_loop() {
    // A serial resource: not SCHED_BATCH, whatever the thread that started it runs under
    // (set before the name, by which the thread is known).
    set_batch_scheduling(false);
    name_this_thread("cairn-writer");
    std::int64_t cpu = thread_cpu_ns();
    std::unique_lock lock(mu_);
    for (;;) {
        writer_cv_.wait(lock, [this] { return due() || (stopping_ && queue_.empty()); });
        if (queue_.empty()) return;  // stopping, and everything queued is written
        const std::size_t n = std::min(queue_.size(), options_.max_batch);
        std::vector<BatchedWrite*> batch(queue_.begin(), queue_.begin() + static_cast<long>(n));
        queue_.erase(queue_.begin(), queue_.begin() + static_cast<long>(n));
        ++in_flight_;
        if (due()) writer_cv_.notify_one();  // room for another batch beside this one
        lock.unlock();
        commit(batch);
        const std::int64_t now = thread_cpu_ns();
        lock.lock();
        stats_.writer_cpu_ns += now - cpu;
        cpu = now;
        --in_flight_;
    }
}

void WriteBatcher::count(std::size_t writes) {
    std::lock_guard lock(mu_);
    ++stats_.batches;
    stats_.writes += writes;
    if (writes > 1) {
        ++stats_.shared_batches;
        stats_.shared_writes += writes;
    }
}

void WriteBatcher::commit(std::span<BatchedWrite* const> batch) {
    const std::size_t n = batch.size();
    // Counted once written, before any writer of it learns its outcome.
    bool counted = false;
    const auto count_once = [&] {
        if (!std::exchange(counted, true)) count(n);
    };
    // The kinds, in the order their first write was queued, and their writes.
    std::vector<std::pair<const WriteKind*, std::vector<BatchedWrite*>>> groups;
    for (BatchedWrite* w : batch) {
        auto it = std::find_if(groups.begin(), groups.end(),
                               [w](const auto& g) { return g.first == &w->kind(); });
        if (it == groups.end()) it = groups.insert(groups.end(), {&w->kind(), {}});
        it->second.push_back(w);
    }
    // A kind that commits alone is a statement of its own, its writers released as soon as
    // theirs is durable (a mixed batch does not hold them in the others' transaction);
    // the other kinds share one transaction.
    std::vector<BatchedWrite*> together;
    for (const auto& [kind, writes] : groups) {
        if (!kind->commits_alone(db_)) {
            together.insert(together.end(), writes.begin(), writes.end());
            continue;
        }
        write_or_split(writes, [this, kind = kind](std::span<BatchedWrite* const> part) {
            kind->write_alone(db_, part);
        });
        count_once();
        publish(writes);
    }
    if (together.empty()) return;
    write_or_split(together, [this](std::span<BatchedWrite* const> part) {
        Transaction tx = db_.begin(Access::read_write);
        std::vector<const WriteKind*> kinds;
        for (BatchedWrite* w : part) {
            if (std::find(kinds.begin(), kinds.end(), &w->kind()) == kinds.end())
                kinds.push_back(&w->kind());
        }
        std::vector<BatchedWrite*> same;
        for (const WriteKind* kind : kinds) {
            same.clear();
            for (BatchedWrite* w : part) {
                if (&w->kind() == kind) same.push_back(w);
            }
            kind->write(tx, same, part.size());
        }
        tx.commit();
    });
    count_once();
    publish(together);
}

// Writes one write on its own, as a batch of one would be.
void WriteBatcher::write_one(std::span<BatchedWrite* const> one) {
    const WriteKind& kind = one.front()->kind();
    try {
        if (kind.commits_alone(db_)) {
            kind.write_alone(db_, one);
        } else {
            Transaction tx = db_.begin(Access::read_write);
            kind.write(tx, one, 1);
            tx.commit();
        }
    } catch (...) {
        one.front()->error = std::current_exception();
    }
}

void WriteBatcher::write_or_split(std::span<BatchedWrite* const> writes,
                                  const std::function<void(std::span<BatchedWrite* const>)>& fn) {
    try {
        fn(writes);
    } catch (...) {
        if (writes.size() == 1) {
            writes.front()->error = std::current_exception();
            return;
        }
        // Nothing of the batch was committed: each write again on its own, so what one
        // throws reaches its own writer and the others land.
        for (BatchedWrite* w : writes) {
            BatchedWrite* const one[] = {w};
            w->error = nullptr;
            write_one(one);
        }
    }
}

void WriteBatcher::publish(std::span<BatchedWrite* const> writes) {
    std::vector<std::function<void()>> callbacks;
    {
        std::lock_guard lock(mu_);
        for (BatchedWrite* w : writes) {
            w->done_ = true;
            // Under the lock: a blocked writer returns (and `w` goes) as soon as it can.
            if (w->waiter_ != nullptr) {
                w->waiter_->notify_one();
            } else if (w->on_done_) {
                callbacks.push_back(std::move(w->on_done_));
            }
        }
    }
    for (auto& done : callbacks) done();
}

void WriteBatcher::set_max_batch(std::size_t n) {
    std::lock_guard lock(mu_);
    options_.max_batch = std::max<std::size_t>(n, 1);
}

WriteBatcher::Stats WriteBatcher::stats() const {
    std::lock_guard lock(mu_);
    Stats out = stats_;
    out.waiting = queue_.size();
    return out;
}

}  // namespace cairn::storage
