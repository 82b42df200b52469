#include "common/threads.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <thread>

TEST_CASE("thread_cpu_ns counts the calling thread's CPU time, not its sleep") {
    using namespace std::chrono_literals;
    const std::int64_t t0 = cairn::thread_cpu_ns();
    std::this_thread::sleep_for(50ms);
    const std::int64_t t1 = cairn::thread_cpu_ns();
    CHECK(t1 >= t0);
    CHECK(t1 - t0 < 20'000'000);  // a sleep costs next to no CPU

    // Spin for 30 ms of wall time: on a busy machine the thread may get less of it, but
    // never none.
    const auto until = std::chrono::steady_clock::now() + 30ms;
    volatile std::uint64_t sink = 0;
    while (std::chrono::steady_clock::now() < until) sink = sink + 1;
    const std::int64_t t2 = cairn::thread_cpu_ns();
    CHECK(t2 - t1 > 1'000'000);
    CHECK(t2 - t1 < 1'000'000'000);
}
