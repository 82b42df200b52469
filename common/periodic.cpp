#include "common/periodic.hpp"

#include "common/threads.hpp"

namespace cairn {

Periodic::Periodic(std::string name, std::chrono::milliseconds every, std::function<void()> fn) {
    thread_ = std::thread([this, name = std::move(name), every, fn = std::move(fn)] {
        name_this_thread(name);
        std::unique_lock lock(mu_);
        while (!cv_.wait_for(lock, every, [this] { return stop_; })) {
            lock.unlock();
            fn();
            lock.lock();
        }
    });
}

Periodic::~Periodic() {
    {
        std::lock_guard lock(mu_);
        stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
}

}  // namespace cairn
