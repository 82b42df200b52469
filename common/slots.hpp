#pragma once

#include <mutex>
#include <string>
#include <unordered_map>

namespace cairn {

// At most `limit` holders per key at once: connections per client address, WebSockets per
// user. A key's count goes when its last holder releases. Thread-safe.
class Slots {
  public:
    explicit Slots(int limit) : limit_(limit) {}
    Slots(const Slots&) = delete;
    Slots& operator=(const Slots&) = delete;

    // A slot for one holder, released when destroyed. Must not outlive its Slots.
    class Hold {
      public:
        Hold() = default;
        Hold(Hold&& other) noexcept : slots_(other.slots_), key_(std::move(other.key_)) {
            other.slots_ = nullptr;
        }
        Hold& operator=(Hold&& other) noexcept;
        Hold(const Hold&) = delete;
        Hold& operator=(const Hold&) = delete;
        ~Hold() { release(); }
        explicit operator bool() const { return slots_ != nullptr; }

      private:
        friend class Slots;
        Hold(Slots* slots, std::string key) : slots_(slots), key_(std::move(key)) {}
        void release();
        Slots* slots_ = nullptr;
        std::string key_;
    };

    // A slot for `key`, or an empty Hold when `key` has `limit` holders already.
    Hold acquire(const std::string& key);
    int limit() const { return limit_; }
    // Holders of `key` now.
    int count(const std::string& key);

  private:
    void release(const std::string& key);

    int limit_;
    std::mutex mutex_;
    std::unordered_map<std::string, int> held_;  // guarded by mutex_; no zero counts
};

}  // namespace cairn
