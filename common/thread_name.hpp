#pragma once

#include <string_view>

namespace cairn {

// Names the calling thread (the kernel keeps 15 bytes), so `top -H`, `perf` and
// /proc/<pid>/task/*/comm tell Cairn's threads apart. Best effort: a failure is ignored.
void name_this_thread(std::string_view name);

}  // namespace cairn
