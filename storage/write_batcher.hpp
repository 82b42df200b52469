#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

namespace cairn::storage {

class Database;
class Transaction;
class WriteKind;

// One write waiting for a batch. Each kind of write derives from it (a step record, an
// event, a transaction's function) and names the WriteKind that knows how to write it.
// The writer owns it and keeps it alive until the write is done.
class BatchedWrite {
  public:
    explicit BatchedWrite(const WriteKind& kind) : kind_(&kind) {}
    BatchedWrite(const BatchedWrite&) = delete;
    BatchedWrite& operator=(const BatchedWrite&) = delete;

    const WriteKind& kind() const { return *kind_; }

    // Set once the write is done: null when it was written, else what writing it threw.
    // A kind may also record a result of its own in the derived type (a lost lease).
    std::exception_ptr error;

  protected:
    ~BatchedWrite() = default;

  private:
    friend class WriteBatcher;
    const WriteKind* kind_;
    bool done_ = false;                          // guarded by the batcher's mutex
    std::condition_variable* waiter_ = nullptr;  // a blocked writer's (write)
    std::function<void()> on_done_;              // an asynchronous writer's (submit)
};

// How the writes of one kind are written together. Implementations are stateless or
// thread-safe: a batcher calls them from several threads at once.
class WriteKind {
  public:
    virtual ~WriteKind() = default;
    // Writes `writes`, all of this kind and in the order they were queued, in `tx`, which
    // the batcher commits with the rest of its batch (`batch_size` writes of every kind).
    // It records each write's own result in the write; what it throws fails the whole
    // batch.
    virtual void write(Transaction& tx, std::span<BatchedWrite* const> writes,
                       std::size_t batch_size) const = 0;
    // Whether write_alone can write such writes on `db` without a transaction around
    // them: committed by the statement itself (on Postgres, one statement in autocommit
    // saves the BEGIN and COMMIT round trips). Such writes are then written apart from the
    // rest of their batch.
    virtual bool commits_alone(const Database& /*db*/) const { return false; }
    virtual void write_alone(Database& /*db*/, std::span<BatchedWrite* const> /*writes*/) const {}
};

// Group commit: the one mechanism by which concurrent writers share commits, for every
// kind of write (step records, run ends, events, transactions) on both backends. Each
// Database has one (Database::writes()).
//
// A write that finds nothing queued and fewer than `in_flight` batches being written is
// written at once on its caller's thread, a batch of one: no hand-off. Any other is
// queued, and writer threads (started at the first such write) take everything queued,
// up to `max_batch` writes, as one batch: one transaction and one commit, but for the
// kinds that commit alone (a statement each). Each writer learns its own outcome once the
// commit that holds its write is durable.
//
// A batch that fails is written again a write at a time, so a write that cannot be
// written fails alone and every other still lands: a write's function may run more than
// once (each earlier run was rolled back).
//
// Thread-safe. The destructor writes what is queued, then joins its threads.
class WriteBatcher {
  public:
    struct Options {
        // Batches written at once: one for SQLite's single writer; on Postgres two, so one
        // batch's round trips overlap the other's commit.
        std::size_t in_flight = 1;
        std::size_t max_batch = 64;
    };
    WriteBatcher(Database& db, Options options);
    ~WriteBatcher();
    WriteBatcher(const WriteBatcher&) = delete;
    WriteBatcher& operator=(const WriteBatcher&) = delete;

    // Writes `w` and returns once it is committed or has failed (w.error).
    void write(BatchedWrite& w);
    // Queues `w` (or writes it at once, as write() does) and calls `done` once `w` is
    // written or has failed, on the thread that wrote it, possibly before this returns.
    // `done` must not block; it may destroy `w`, which the batcher no longer touches.
    void submit(BatchedWrite& w, std::function<void()> done);

    // At most `n` writes a batch from now on (1: every write commits on its own, the
    // control for measuring what batching buys).
    void set_max_batch(std::size_t n);

    struct Stats {
        std::uint64_t batches = 0;         // batches written, one write or more
        std::uint64_t writes = 0;          // writes they carried
        std::uint64_t shared_batches = 0;  // batches of two writes or more
        std::uint64_t shared_writes = 0;   // writes those carried
        std::size_t waiting = 0;           // writes queued now
        std::int64_t writer_cpu_ns = 0;    // CPU time of the writer threads so far
    };
    Stats stats() const;

  private:
    void enqueue(std::unique_lock<std::mutex>& lock, BatchedWrite& w);
    bool due() const;
    bool start_writers();
    void writer_loop();
    void commit(std::span<BatchedWrite* const> batch);
    void write_one(std::span<BatchedWrite* const> writes);
    void write_or_split(std::span<BatchedWrite* const> writes,
                        const std::function<void(std::span<BatchedWrite* const>)>& fn);
    void publish(std::span<BatchedWrite* const> writes);
    void count(std::size_t writes);

    Database& db_;
    Options options_;  // max_batch guarded by mu_
    mutable std::mutex mu_;
    std::deque<BatchedWrite*> queue_;  // guarded by mu_
    std::size_t in_flight_ = 0;        // batches being written; guarded by mu_
    bool stopping_ = false;            // guarded by mu_
    Stats stats_;                      // guarded by mu_ (waiting is queue_.size())
    std::condition_variable writer_cv_;
    std::vector<std::thread> writers_;  // guarded by mu_; joined by the destructor
};

}  // namespace cairn::storage
