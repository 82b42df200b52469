#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "cairn/workflow.hpp"

namespace cairn::sdk {

// A registration Cairn cannot accept; the message names the function and the field.
class ConfigError : public std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};

// One trigger of an SDK function: an event (with an optional expression over `event`)
// or a cron schedule.
struct Trigger {
    std::string event;
    std::string expression;
    std::string cron;
};

// An entry of `cancel`: an event that cancels a run when `expression` (over `event`, the
// run's, and `async`, the cancelling one) holds, within `timeout` of the run's start.
struct CancelSpec {
    std::string event;
    std::string expression;
    std::optional<std::chrono::milliseconds> timeout;
};

// One function as an SDK registers it (its FunctionConfig).
struct FunctionConfig {
    std::string slug;  // "<app id>-<function id>": Cairn's workflow id
    std::string name;
    std::string url;  // steps.step.runtime.url: where each request for it goes
    std::vector<Trigger> triggers;
    int retries = 3;  // after the first attempt; the SDK's default
    std::vector<CancelSpec> cancel;
    // concurrency, throttle, rateLimit, debounce, batchEvents, priority, singleton,
    // idempotency as Cairn's controls (docs/flow-control.md).
    FlowControl flow;
    // Settings stored but not enforced, each named (docs/sdk.md).
    std::vector<std::string> warnings;
    json config;  // as sent
};

// A POST /fn/register body (the SDK's RegisterRequest).
struct Registration {
    std::string app_id;  // appName
    std::string url;
    std::string sdk;  // "js:v3.38.0"
    std::string framework;
    std::vector<FunctionConfig> functions;
};

// Validates a registration: every field Cairn uses, every expression (parsed, so one
// outside the supported subset is refused here) and every cron schedule. Throws
// ConfigError naming what is wrong.
Registration parse_registration(const json& body);

// An SDK duration ("1h30m", "30s", "2d", "1w", "500ms"; "" is zero) in milliseconds.
std::optional<std::int64_t> parse_sdk_duration(std::string_view text);
// A duration or an ISO 8601 instant as an epoch-ms deadline from `now_ms`.
std::optional<std::int64_t> parse_deadline(std::string_view text, std::int64_t now_ms);

}  // namespace cairn::sdk
