#include "plugins/ticket/passwords.hpp"

#include <sodium.h>

#include <stdexcept>

#include "common/threads.hpp"

namespace cairn::ticket {

std::string hash_password(std::string_view password) {
    char out[crypto_pwhash_STRBYTES];
    if (crypto_pwhash_str_alg(
            out, password.data(), password.size(), crypto_pwhash_OPSLIMIT_INTERACTIVE,
            crypto_pwhash_MEMLIMIT_INTERACTIVE, crypto_pwhash_ALG_ARGON2ID13) != 0)
        throw std::runtime_error("password hashing ran out of memory");
    return out;
}

bool verify_password(std::string_view hash, std::string_view password) {
    const std::string h(hash);
    return crypto_pwhash_str_verify(h.c_str(), password.data(), password.size()) == 0;
}

PasswordPool::PasswordPool(std::size_t threads, std::size_t max_waiting)
    : max_waiting_(max_waiting) {
    for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { loop(); });
}

PasswordPool::~PasswordPool() {
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
}

bool PasswordPool::submit(std::function<void()> fn) {
    {
        std::lock_guard lock(mu_);
        if (queue_.size() >= max_waiting_) return false;
        queue_.push_back(std::move(fn));
    }
    cv_.notify_one();
    return true;
}

void PasswordPool::loop() {
    name_this_thread("cairn-passwords");
    std::unique_lock lock(mu_);
    for (;;) {
        cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, with nothing left
        auto fn = std::move(queue_.front());
        queue_.pop_front();
        lock.unlock();
        fn();
        lock.lock();
    }
}

}  // namespace cairn::ticket
