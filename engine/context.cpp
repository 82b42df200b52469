#include "cairn/context.hpp"

#include "engine/detail/execution.hpp"

namespace cairn {

using std::chrono::milliseconds;

json Context::run_step(std::string_view name, const std::function<json()>& fn,
                       const StepOptions& options) {
    return ex_.run_step(name, fn, nullptr, options);
}

json Context::run_transaction(std::string_view name,
                              const std::function<json(storage::Transaction&)>& fn,
                              const StepOptions& options) {
    return ex_.run_step(name, {}, &fn, options);
}

json Context::parallel(const std::vector<std::pair<std::string, std::function<json()>>>& branches,
                       const StepOptions& options) {
    return ex_.parallel(branches, options);
}

void Context::sleep(std::string_view name, milliseconds duration) {
    // The wake time is fixed when the sleep is first recorded; replays reuse it.
    ex_.sleep_until(name, ex_.now() + duration.count());
}

void Context::sleep_until(std::string_view name, std::int64_t unix_ms) {
    ex_.sleep_until(name, unix_ms);
}

std::optional<json> Context::wait_for_event(std::string_view name, std::string_view event_name,
                                            std::string_view match_field, milliseconds timeout) {
    return ex_.wait_for_event(name, event_name, match_field, timeout);
}

std::optional<json> Context::wait_for_event_where(std::string_view name,
                                                  std::string_view event_name,
                                                  std::string_view expression,
                                                  milliseconds timeout) {
    return ex_.wait_for_event(name, event_name, {}, timeout, expression);
}

std::vector<Context::Recorded> Context::recorded() const {
    return ex_.history();
}

std::string Context::send_event(std::string_view name, const json& event) {
    return ex_.send_event(name, event);
}

json Context::invoke(std::string_view name, std::string_view workflow_id, const json& data,
                     std::optional<std::chrono::milliseconds> timeout) {
    return ex_.invoke(name, workflow_id, data, timeout);
}

const std::string& Context::run_id() const {
    return ex_.run_id();
}

const json& Context::event() const {
    return ex_.event();
}

const json& Context::events() {
    return ex_.events();
}

int Context::attempt() const {
    return ex_.attempt();
}

void Context::log(std::string_view line) {
    ex_.log(line);
}

}  // namespace cairn
