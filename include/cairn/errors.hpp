#pragma once

// Part of Cairn's public API (docs/library.md).

#include <chrono>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace cairn {

// Thrown from a step to fail it at once, without retries.
class NonRetriableError : public std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Thrown from a step to be retried after `delay` (e.g. a 429's Retry-After) instead of the
// policy's backoff. Still counts as an attempt.
class RetryAfterError : public std::runtime_error {
  public:
    RetryAfterError(const std::string& message, std::chrono::milliseconds delay)
        : std::runtime_error(message), delay_(delay) {}
    std::chrono::milliseconds delay() const { return delay_; }

  private:
    std::chrono::milliseconds delay_;
};

// Surfaces in workflow code when a step has failed for good (retries exhausted or a
// NonRetriableError), or an invoked child run failed. Workflow code may catch it; when it
// escapes, the run fails. Replays raise it again at the same point.
class StepFailed : public std::runtime_error {
  public:
    StepFailed(std::string key, nlohmann::json error)
        : std::runtime_error("step '" + key +
                             "' failed: " + error.value("message", std::string("unknown error"))),
          key_(std::move(key)),
          error_(std::move(error)) {}
    const std::string& key() const { return key_; }
    // {"type": ..., "message": ..., "attempt": n}
    const nlohmann::json& error() const { return error_; }

  private:
    std::string key_;
    nlohmann::json error_;
};

// A replay asked for different operations than were recorded: the workflow's code is not
// deterministic (or changed under a running run). The run fails with this message.
class NonDeterministicError : public std::runtime_error {
    using std::runtime_error::runtime_error;
};

}  // namespace cairn
