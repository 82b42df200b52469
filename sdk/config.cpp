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
// The settings Cairn stores but does not enforce.
constexpr std::string_view kUnenforced[] = {"timeouts"};

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

// A duration field ("5m"), required or not; nullopt when absent.
std::optional<std::chrono::milliseconds> duration_field(const json& j, std::string_view key,
                                                        const std::string& where, bool required) {
    const std::string text = text_field(j, key, where, required);
    if (text.empty()) return std::nullopt;
    const auto ms = parse_sdk_duration(text);
    if (!ms || *ms <= 0)
        throw ConfigError(fmt::format("{}: \"{}\" '{}' is not a duration", where, key, text));
    return std::chrono::milliseconds(*ms);
}

int int_field(const json& j, std::string_view key, const std::string& where, int fallback, int min,
              int max) {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) return fallback;
    if (!it->is_number_integer() || it->get<std::int64_t>() < min || it->get<std::int64_t>() > max)
        throw ConfigError(
            fmt::format("{}: \"{}\" must be an integer from {} to {}", where, key, min, max));
    return it->get<int>();
}

std::string key_field(const json& j, const std::string& where) {
    std::string key = text_field(j, "key", where, false);
    if (!key.empty()) check_expression(key, where + ".key");
    return key;
}

// The object form of a setting, or nullopt when absent; ConfigError when not an object.
const json* object_field(const json& f, std::string_view key, const std::string& where) {
    const auto it = f.find(key);
    if (it == f.end() || it->is_null()) return nullptr;
    if (!it->is_object())
        throw ConfigError(fmt::format("{}: \"{}\" must be an object", where, key));
    return &*it;
}

// The function's flow-control settings as Cairn's controls (docs/sdk.md lists the
// differences): concurrency's env and account scopes count per function here, and a
// batch's `if` is not supported.
void parse_flow(const json& f, const std::string& where, FunctionConfig& fc) {
    FlowControl& flow = fc.flow;
    if (const auto it = f.find("concurrency"); it != f.end() && !it->is_null()) {
        const std::string at = where + ": concurrency";
        json limits = *it;
        if (limits.is_number_integer()) limits = json::array({{{"limit", *it}}});
        if (limits.is_object()) limits = json::array({limits});
        if (!limits.is_array() || limits.size() > 2)
            throw ConfigError(at + " must be a number, an object or a list of at most two");
        for (const json& c : limits) {
            if (!c.is_object()) throw ConfigError(at + ": each limit must be an object");
            const std::string scope = text_field(c, "scope", at, false);
            if (!scope.empty() && scope != "fn")
                fc.warnings.push_back(fmt::format(
                    "function '{}': concurrency scope '{}' counts per function in Cairn", fc.slug,
                    scope));
            flow.concurrency.push_back(
                {int_field(c, "limit", at, 0, 1, 100'000), key_field(c, at)});
            if (flow.concurrency.back().limit == 0)
                throw ConfigError(at + ": \"limit\" is required");
        }
    }
    if (const json* t = object_field(f, "throttle", where)) {
        const std::string at = where + ": throttle";
        const int limit = int_field(*t, "limit", at, 1, 0, 100'000);
        flow.throttle = Throttle{limit == 0 ? 1 : limit, *duration_field(*t, "period", at, true),
                                 int_field(*t, "burst", at, 1, 1, 100'000), key_field(*t, at)};
    }
    if (const json* r = object_field(f, "rateLimit", where)) {
        const std::string at = where + ": rateLimit";
        const auto period = *duration_field(*r, "period", at, true);
        if (period > std::chrono::hours(24))
            throw ConfigError(at + ": \"period\" must be at most 24h");
        flow.rate_limit =
            RateLimit{int_field(*r, "limit", at, 0, 1, 10'000), period, key_field(*r, at)};
        if (flow.rate_limit->limit == 0) throw ConfigError(at + ": \"limit\" is required");
    }
    if (const json* d = object_field(f, "debounce", where)) {
        const std::string at = where + ": debounce";
        flow.debounce = Debounce{*duration_field(*d, "period", at, true), key_field(*d, at),
                                 duration_field(*d, "timeout", at, false)};
    }
    if (const json* b = object_field(f, "batchEvents", where)) {
        const std::string at = where + ": batchEvents";
        const int size = int_field(*b, "maxSize", at, 0, 1, 10'000);
        if (size == 0) throw ConfigError(at + ": \"maxSize\" is required");
        if (!text_field(*b, "if", at, false).empty())
            fc.warnings.push_back(
                fmt::format("function '{}': batchEvents.if is not supported by Cairn", fc.slug));
        flow.batch = Batching{size, *duration_field(*b, "timeout", at, true), key_field(*b, at)};
    }
    if (const json* p = object_field(f, "priority", where)) {
        flow.priority = text_field(*p, "run", where + ": priority", false);
        if (!flow.priority.empty()) check_expression(flow.priority, where + ": priority.run");
    }
    if (const json* s = object_field(f, "singleton", where)) {
        const std::string at = where + ": singleton";
        const std::string mode = text_field(*s, "mode", at, true);
        if (mode != "skip" && mode != "cancel")
            throw ConfigError(at + ": \"mode\" must be \"skip\" or \"cancel\"");
        flow.singleton = Singleton{
            key_field(*s, at), mode == "skip" ? Singleton::Mode::skip : Singleton::Mode::cancel};
    }
    const std::string idempotency = text_field(f, "idempotency", where, false);
    if (!idempotency.empty()) {
        check_expression(idempotency, where + ": idempotency");
        flow.idempotency = Idempotency{idempotency, std::chrono::hours(24)};
    }
    if (flow.debounce && flow.batch)
        throw ConfigError(where + ": \"debounce\" and \"batchEvents\" do not combine");
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
    parse_flow(f, where, fc);
    for (std::string_view key : kUnenforced) {
        const auto it = f.find(key);
        if (it == f.end() || it->is_null()) continue;
        fc.warnings.push_back(
            fmt::format("function '{}': '{}' is stored but not enforced by Cairn", fc.slug, key));
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
