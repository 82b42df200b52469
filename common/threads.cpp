#include "common/threads.hpp"

#include <pthread.h>
#include <sched.h>
#include <time.h>

#include <algorithm>
#include <string>

namespace cairn {

void name_this_thread(std::string_view name) {
    const std::string n(name.substr(0, std::min<std::size_t>(name.size(), 15)));
    pthread_setname_np(pthread_self(), n.c_str());
}

void set_batch_scheduling(bool batch) {
    const sched_param none{};  // both policies take priority 0
    pthread_setschedparam(pthread_self(), batch ? SCHED_BATCH : SCHED_OTHER, &none);
}

std::int64_t thread_cpu_ns() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace cairn
