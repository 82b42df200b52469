#include "sdk/config.hpp"

#include <fmt/format.h>

#include <cctype>
#include <set>

#include "common/time.hpp"
#include "engine/cron.hpp"
#include "engine/expression.hpp"

namespace cairn::sdk {

namespace {

constexpr std::size_t kMaxFunctions = 500;
constexpr std::size_t kMaxTriggers = 10;
constexpr int kMaxRetries = 20;
// The flow-control settings Cairn stores but does not enforce yet.
constexpr std::string_view kFlowControl[] = {"concurrency", "throttle",    "rateLimit",
                                             "debounce",    "batchEvents", "priority",
                                             "singleton",   "idempotency", "timeouts"};

std::string text_field(const json& j, std::string_view key, const std::string& where,
                       bool required) {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) {
        if (required) throw ConfigError(fmt::format("{}: \"{}\" is required", where, key));
        return {};
    }
    if (!it->is_string()) throw ConfigError(fmt::format("{}: \"{}\" must be a string", where, key));
    return it->get<std::string>();
}

void check_expression(const std::string& text, const std::string& where) {
    try {
        engine::Expression::parse(text);
    } catch (const engine::ExpressionError& e) {
        throw ConfigError(fmt::format("{}: {}", where, e.what()));
    }
}

bool http_url(std::string_view url) {
    return url.starts_with("http://") || url.starts_with("https://");
}

FunctionConfig parse_function(const json& f, std::size_t index) {
    if (!f.is_object()) throw ConfigError(fmt::format("functions[{}] must be an object", index));
    FunctionConfig fc;
    fc.config = f;
    fc.slug = text_field(f, "id", fmt::format("functions[{}]", index), true);
    if (fc.slug.empty() || fc.slug.size() > 200)
        throw ConfigError(fmt::format("functions[{}]: \"id\" must be 1 to 200 characters", index));
    const std::string where = fmt::format("function '{}'", fc.slug);
    fc.name = text_field(f, "name", where, false);
    if (fc.name.empty()) fc.name = fc.slug;

    const auto steps = f.find("steps");
    if (steps == f.end() || !steps->is_object() || steps->empty())
        throw ConfigError(fmt::format("{}: \"steps\" must hold its step", where));
    const json& step = steps->begin().value();
    if (!step.is_object() || !step.contains("runtime") || !step["runtime"].is_object())
        throw ConfigError(fmt::format("{}: its step has no runtime", where));
    fc.url = text_field(step["runtime"], "url", where + ": steps.runtime", true);
    if (!http_url(fc.url))
        throw ConfigError(fmt::format("{}: the step's URL must be http:// or https://", where));
    if (const auto r = step.find("retries"); r != step.end() && r->is_object()) {
        const auto a = r->find("attempts");
        if (a == r->end() || !a->is_number_integer() || a->get<int>() < 0 ||
            a->get<int>() > kMaxRetries)
            throw ConfigError(fmt::format("{}: retries.attempts must be an integer from 0 to {}",
                                          where, kMaxRetries));
        fc.retries = a->get<int>();
    }

    const auto triggers = f.find("triggers");
    if (triggers != f.end() && !triggers->is_null()) {
        if (!triggers->is_array() || triggers->size() > kMaxTriggers)
            throw ConfigError(
                fmt::format("{}: \"triggers\" must be a list of at most {}", where, kMaxTriggers));
        for (const json& t : *triggers) {
            if (!t.is_object()) throw ConfigError(where + ": a trigger must be an object");
            Trigger tr;
            tr.event = text_field(t, "event", where + ": trigger", false);
            tr.expression = text_field(t, "expression", where + ": trigger", false);
            tr.cron = text_field(t, "cron", where + ": trigger", false);
            if (tr.event.empty() == tr.cron.empty())
                throw ConfigError(where + ": a trigger has either \"event\" or \"cron\"");
            if (!tr.expression.empty())
                check_expression(tr.expression, where + ": trigger expression");
            if (!tr.cron.empty()) {
                try {
                    engine::CronSchedule::parse(tr.cron);
                } catch (const std::invalid_argument& e) {
                    throw ConfigError(fmt::format("{}: {}", where, e.what()));
                }
            }
            fc.triggers.push_back(std::move(tr));
        }
        std::size_t crons = 0;
        for (const Trigger& tr : fc.triggers) crons += tr.cron.empty() ? 0 : 1;
        if (crons > 1) throw ConfigError(where + ": Cairn takes one cron trigger per function");
    }

    if (const auto c = f.find("cancel"); c != f.end() && !c->is_null()) {
        if (!c->is_array()) throw ConfigError(where + ": \"cancel\" must be a list");
        for (const json& e : *c) {
            if (!e.is_object()) throw ConfigError(where + ": a cancel entry must be an object");
            CancelSpec cs;
            cs.event = text_field(e, "event", where + ": cancel", true);
            cs.expression = text_field(e, "if", where + ": cancel", false);
            if (!cs.expression.empty()) check_expression(cs.expression, where + ": cancel.if");
            const std::string timeout = text_field(e, "timeout", where + ": cancel", false);
            if (!timeout.empty()) {
                const auto ms = parse_sdk_duration(timeout);
                if (!ms || *ms <= 0)
                    throw ConfigError(
                        fmt::format("{}: cancel timeout '{}' is not a duration", where, timeout));
                cs.timeout = std::chrono::milliseconds(*ms);
            }
            fc.cancel.push_back(std::move(cs));
        }
    }
    for (std::string_view key : kFlowControl) {
        const auto it = f.find(key);
        if (it == f.end() || it->is_null()) continue;
        fc.warnings.push_back(fmt::format(
            "function '{}': '{}' is stored but not enforced yet (flow control is not in this "
            "version of Cairn)",
            fc.slug, key));
    }
    return fc;
}

}  // namespace

Registration parse_registration(const json& body) {
    if (!body.is_object()) throw ConfigError("the registration must be a JSON object");
    Registration r;
    r.app_id = text_field(body, "appName", "registration", true);
    if (r.app_id.empty() || r.app_id.size() > 200)
        throw ConfigError("registration: \"appName\" must be 1 to 200 characters");
    r.url = text_field(body, "url", "registration", true);
    if (!http_url(r.url)) throw ConfigError("registration: \"url\" must be http:// or https://");
    r.sdk = text_field(body, "sdk", "registration", false);
    r.framework = text_field(body, "framework", "registration", false);
    const auto fns = body.find("functions");
    if (fns != body.end() && !fns->is_null()) {
        if (!fns->is_array() || fns->size() > kMaxFunctions)
            throw ConfigError(fmt::format(
                "registration: \"functions\" must be a list of at most {}", kMaxFunctions));
        std::set<std::string> seen;
        for (std::size_t i = 0; i < fns->size(); ++i) {
            FunctionConfig fc = parse_function((*fns)[i], i);
            if (!seen.insert(fc.slug).second)
                throw ConfigError(fmt::format("function '{}' is registered twice", fc.slug));
            r.functions.push_back(std::move(fc));
        }
    }
    return r;
}

std::optional<std::int64_t> parse_sdk_duration(std::string_view text) {
    std::int64_t total = 0;
    std::size_t i = 0;
    while (i < text.size()) {
        std::int64_t n = 0;
        const std::size_t start = i;
        while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
            n = n * 10 + (text[i] - '0');
            if (n > 1'000'000'000) return std::nullopt;
            ++i;
        }
        if (i == start || i >= text.size()) return std::nullopt;
        std::int64_t unit = 0;
        if (text.substr(i, 2) == "ms") {
            unit = 1;
            ++i;
        } else {
            switch (text[i]) {
                case 'w':
                    unit = 7 * 86'400'000LL;
                    break;
                case 'd':
                    unit = 86'400'000LL;
                    break;
                case 'h':
                    unit = 3'600'000LL;
                    break;
                case 'm':
                    unit = 60'000LL;
                    break;
                case 's':
                    unit = 1000LL;
                    break;
                default:
                    return std::nullopt;
            }
        }
        ++i;
        total += n * unit;
    }
    return total;
}

std::optional<std::int64_t> parse_deadline(std::string_view text, std::int64_t now_ms) {
    if (const auto ms = parse_sdk_duration(text)) return now_ms + *ms;
    return parse_rfc3339(text);
}

}  // namespace cairn::sdk
