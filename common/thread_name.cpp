#include "common/thread_name.hpp"

#include <pthread.h>

#include <algorithm>
#include <string>

namespace cairn {

void name_this_thread(std::string_view name) {
    const std::string n(name.substr(0, std::min<std::size_t>(name.size(), 15)));
    pthread_setname_np(pthread_self(), n.c_str());
}

}  // namespace cairn
