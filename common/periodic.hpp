#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace cairn {

// Calls `fn` every `every` from a thread of its own named `name`, first after one period,
// until destroyed: the destructor wakes the thread and joins it (after a call in progress
// returns). `fn` must not throw.
class Periodic {
  public:
    Periodic(std::string name, std::chrono::milliseconds every, std::function<void()> fn);
    ~Periodic();
    Periodic(const Periodic&) = delete;
    Periodic& operator=(const Periodic&) = delete;

  private:
    std::mutex mu_;
    std::condition_variable cv_;
    bool stop_ = false;  // guarded by mu_
    std::thread thread_;
};

}  // namespace cairn
