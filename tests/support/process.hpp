#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace cairn::testing {

// A child process started with posix_spawn, stdout and stderr going to `log_path`.
// The destructor kills it (SIGKILL) if it is still running.
class Process {
  public:
    Process(const std::vector<std::string>& argv, const std::string& log_path,
            const std::map<std::string, std::string>& extra_env = {});
    ~Process();
    Process(const Process&) = delete;
    Process& operator=(const Process&) = delete;

    pid_t pid() const { return pid_; }
    void signal(int sig) const;
    // Waits up to `timeout` for the process to exit; returns its exit code (128+N for
    // signal N), or -1 on timeout.
    int wait(std::chrono::milliseconds timeout);
    bool running();
    std::string log() const;

  private:
    pid_t pid_ = -1;
    std::string log_path_;
    bool reaped_ = false;
    int status_ = 0;
};

// The path of the `cairn` binary under test (CAIRN_BIN, set by CTest).
std::string cairn_binary();

}  // namespace cairn::testing
