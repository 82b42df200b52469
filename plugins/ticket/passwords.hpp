#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace cairn::ticket {

// Argon2id (libsodium's crypto_pwhash_str, interactive limits: 64 MiB and tens of
// milliseconds of CPU each). Thread-safe.
std::string hash_password(std::string_view password);
bool verify_password(std::string_view hash, std::string_view password);

// The threads that hash and check passwords, and nothing else: however many requests
// log in at once, at most `threads` hashes run (and take memory), the server's handler
// threads stay free for other requests, and no hash runs inside a database transaction.
// Work waits in a queue of at most `max_waiting`; past it submit() refuses.
class PasswordPool {
  public:
    PasswordPool(std::size_t threads, std::size_t max_waiting);
    // Runs what is queued, then joins the threads.
    ~PasswordPool();
    PasswordPool(const PasswordPool&) = delete;
    PasswordPool& operator=(const PasswordPool&) = delete;

    // Queues `fn` (which must not throw); false, and nothing queued, when the queue is full.
    bool submit(std::function<void()> fn);

  private:
    void loop();

    const std::size_t max_waiting_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> queue_;  // guarded by mu_
    bool stopping_ = false;                    // guarded by mu_
    std::vector<std::thread> threads_;
};

}  // namespace cairn::ticket
