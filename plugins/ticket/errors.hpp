#pragma once

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace cairn::ticket {

// Every outcome the ticket services report to a caller, mapped to an HTTP status in one
// place (routes.cpp, http_status()). Services throw ApiError; anything else that escapes
// a route is a 500 whose text is logged, never sent.
enum class ErrorCode {
    validation_failed,  // 400: a field is missing, of the wrong type or out of range
    invalid_json,       // 400: the body is not JSON
    unauthorized,       // 401: no, malformed, expired or revoked token; wrong password
    forbidden,          // 403: authenticated, but the role may not do this
    not_found,          // 404: no such resource, or one the caller may not see
    conflict,           // 409: the resource's state forbids it (a closed ticket, the last admin)
    rate_limited,       // 429: too many attempts; retry_after_s says when to come back
    unavailable,        // 503: a queue is full; retry_after_s says when to come back
};

int http_status(ErrorCode code);
std::string_view to_string(ErrorCode code);

class ApiError : public std::runtime_error {
  public:
    ApiError(ErrorCode code, const std::string& message,
             nlohmann::json details = nlohmann::json::array(), int retry_after_s = 0)
        : std::runtime_error(message),
          code_(code),
          details_(std::move(details)),
          retry_after_s_(retry_after_s) {}
    ErrorCode code() const { return code_; }
    const nlohmann::json& details() const { return details_; }
    int retry_after_s() const { return retry_after_s_; }

  private:
    ErrorCode code_;
    nlohmann::json details_;
    int retry_after_s_;
};

// Collects per-field problems and throws one validation_failed ApiError naming them all.
class Problems {
  public:
    void add(std::string field, std::string message) {
        details_.push_back({{"field", std::move(field)}, {"message", std::move(message)}});
    }
    bool empty() const { return details_.empty(); }
    // Throws when any problem was added.
    void check(const std::string& message = "the request has invalid fields") const {
        if (!details_.empty()) throw ApiError(ErrorCode::validation_failed, message, details_);
    }

  private:
    nlohmann::json details_ = nlohmann::json::array();
};

}  // namespace cairn::ticket
