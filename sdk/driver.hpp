#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "cairn/workflow.hpp"
#include "sdk/config.hpp"
#include "sdk/signing.hpp"
#include "sdk/transport.hpp"

namespace cairn::sdk {

// What every SDK function of a process shares: how to reach apps and how to sign.
struct Calls {
    std::shared_ptr<Transport> transport;
    std::optional<SigningKey> key;  // signed mode when set; dev mode (no signatures) when not
    std::function<std::int64_t()> now_ms;
};

// An SDK function as a process knows it; `removed` is set when a sync drops it, so runs
// of it in flight fail at their next call instead of reaching the app.
struct Function {
    std::string app_id;
    FunctionConfig config;
    std::atomic<bool> removed{false};
};

// The workflow that runs `fn` by calling its app (docs/sdk.md): its id is the function's
// slug, its triggers and cron schedule the function's, and its body drives the SDK's
// requests, recording each step's result under the SDK's hashed id.
Workflow sdk_workflow(std::shared_ptr<Function> fn, std::shared_ptr<const Calls> calls);

// The workflow left for a function a sync removed: no triggers, and a run of it (one
// that was queued, sleeping or waiting) fails with a message saying so.
Workflow removed_workflow(const std::string& slug, const std::string& app_id);

// An event as an SDK reads it: {name, data, id, ts, user}, Cairn's own event names given
// their Inngest counterparts (an invoke's, a cron tick's).
json sdk_event(const json& event);

}  // namespace cairn::sdk
