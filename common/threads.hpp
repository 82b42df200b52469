#pragma once

#include <cstdint>
#include <string_view>

namespace cairn {

// Names the calling thread (the kernel keeps 15 bytes), so `top -H`, `perf` and
// /proc/<pid>/task/*/comm tell Cairn's threads apart. Best effort: a failure is ignored.
void name_this_thread(std::string_view name);

// Puts the calling thread under SCHED_BATCH (true) or back under the normal policy
// (false), keeping its nice value; unprivileged. A SCHED_BATCH thread that wakes up does
// not preempt the thread running on its CPU: the engine's many worker threads use it so
// that the one thread writing their batches, whose commit wakes them, is not preempted by
// each of them in turn. The threads that serve a
// serial resource set the normal policy explicitly, since a new thread inherits its
// creator's. Best effort: a failure is ignored.
void set_batch_scheduling(bool batch);

// CPU time the calling thread has used, in nanoseconds (CLOCK_THREAD_CPUTIME_ID).
std::int64_t thread_cpu_ns();

}  // namespace cairn
