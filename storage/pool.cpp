// The connection pool that lends connections to transactions.

#include <fmt/format.h>

#include <thread>

#include "storage/detail/connection.hpp"

namespace cairn::storage {

namespace detail {

Pool::Pool(std::string backend, ConnectionFactory factory, std::size_t max_size)
    : backend_(std::move(backend)), factory_(std::move(factory)), max_size_(max_size) {}

Pool::~Pool() = default;

std::unique_ptr<PooledConnection> Pool::acquire(std::chrono::milliseconds wait) {
    std::unique_lock lock(mu_);
    const auto deadline = std::chrono::steady_clock::now() + wait;
    for (;;) {
        if (!idle_.empty()) {
            auto conn = std::move(idle_.back());
            idle_.pop_back();
            return std::make_unique<PooledConnection>(*this, std::move(conn));
        }
        if (open_ < max_size_) {
            ++open_;
            lock.unlock();
            // Connect outside the lock; a refused connection is retried a few times so a
            // database restarting under us does not fail the caller at once.
            constexpr int kAttempts = 3;
            for (int attempt = 1;; ++attempt) {
                try {
                    return std::make_unique<PooledConnection>(*this, factory_());
                } catch (const ConnectionError&) {
                    if (attempt == kAttempts) {
                        std::lock_guard relock(mu_);
                        --open_;
                        cv_.notify_one();
                        throw;
                    }
                    std::this_thread::sleep_for(std::chrono::milliseconds(100 * attempt));
                } catch (...) {
                    std::lock_guard relock(mu_);
                    --open_;
                    cv_.notify_one();
                    throw;
                }
            }
        }
        if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && idle_.empty() &&
            open_ >= max_size_) {
            throw ConnectionError(
                backend_, fmt::format("no free connection within {} ms (pool of {})", wait.count(),
                                      max_size_));
        }
    }
}

void Pool::give_back(std::unique_ptr<Connection> conn) {
    std::lock_guard lock(mu_);
    if (conn && conn->healthy()) {
        idle_.push_back(std::move(conn));
    } else {
        --open_;
    }
    cv_.notify_one();
}

}  // namespace detail

}  // namespace cairn::storage
