// An SDK function's run: replays its record into the SDK's `steps`, then calls the app
// until the function returns, turning each opcode the app answers into the durable
// operation it stands for (a step's result, a sleep, a wait, an invoke, parallel steps).

#include "sdk/driver.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <thread>

#include "cairn/context.hpp"
#include "common/json.hpp"
#include "common/time.hpp"
#include "engine/expression.hpp"
#include "sdk/jcs.hpp"

namespace cairn::sdk {

namespace {

using std::chrono::milliseconds;

// Operation keys of Cairn's own (a retried call to the app): never an SDK step id, which
// is hex.
constexpr std::string_view kCallKey = "cairn/call/";
constexpr std::int64_t kNeverMs = std::int64_t{366} * 24 * 3600 * 1000;
constexpr std::string_view kStartKey = "cairn/start";
constexpr int kQuickRetries = 5;
constexpr int kMaxIdleAnswers = 3;
constexpr std::chrono::milliseconds kStartTolerance{1000};

json sdk_error(std::string_view message, std::string_view name = "Error") {
    return {{"name", name}, {"message", message}, {"stack", ""}};
}

// What one request to the app answered, read.
struct Reply {
    enum class Kind { returned, ops, failed } kind = Kind::failed;
    json value;  // returned: the function's output; ops: the opcode list
    json error;  // failed: an SDK-shaped error
    bool retriable = true;
    std::optional<milliseconds> retry_after;
    long status = 0;
};

std::optional<milliseconds> retry_after_of(const std::string& header, std::int64_t now) {
    if (header.empty()) return std::nullopt;
    std::int64_t s = 0;
    const auto [end, ec] = std::from_chars(header.data(), header.data() + header.size(), s);
    if (ec == std::errc{} && end == header.data() + header.size() && s >= 0)
        return milliseconds(std::min<std::int64_t>(s, 86'400) * 1000);
    if (const auto at = parse_rfc3339(header))
        return milliseconds(std::max<std::int64_t>(*at - now, 0));
    return std::nullopt;
}

// The function's URL asking for `step_id` ("step" for the function from the top).
std::string url_for(const std::string& base, std::string_view step_id) {
    const std::size_t q = base.find('?');
    std::string path = base.substr(0, q);
    std::string query = q == std::string::npos ? std::string() : base.substr(q + 1);
    std::string out;
    bool replaced = false;
    std::size_t i = 0;
    while (i <= query.size() && !query.empty()) {
        const std::size_t amp = std::min(query.find('&', i), query.size());
        std::string part = query.substr(i, amp - i);
        if (part.starts_with("stepId=")) {
            part = fmt::format("stepId={}", step_id);
            replaced = true;
        }
        if (!part.empty()) out += (out.empty() ? "" : "&") + part;
        i = amp + 1;
    }
    if (!replaced) out += fmt::format("{}stepId={}", out.empty() ? "" : "&", step_id);
    return path + "?" + out;
}

class Driver {
  public:
    Driver(const Function& fn, const Calls& calls, Context& ctx)
        : fn_(fn), calls_(calls), ctx_(ctx), event_(sdk_event(ctx.event())) {}

    // The run's events as the SDK reads them: a batch's all (batchEvents), else the one.
    json events() {
        if (!fn_.config.flow.batch) return json::array({event_});
        json out = json::array();
        for (const json& e : ctx_.events()) out.push_back(sdk_event(e));
        return out;
    }

    json run() {
        std::optional<Reply> pending = replay();
        // An event dated ahead of this clock (its `ts`) starts its runs then: a durable
        // sleep before the first call. A second of tolerance keeps clocks that disagree a
        // little from delaying every run.
        const std::int64_t ts = ctx_.event().value("ts", std::int64_t{0});
        if (ops_ == 0 && ts > calls_.now_ms() + kStartTolerance.count()) {
            ++ops_;
            ctx_.sleep_until(kStartKey, ts);
        }
        // Answers that add nothing (only ops already done, or None) in a row: an app that
        // keeps answering so would be called for ever.
        int idle = 0;
        for (;;) {
            Reply r = pending ? std::move(*pending) : call("step", 0);
            pending.reset();
            if (r.kind == Reply::Kind::failed) r = retried_call(std::move(r));
            if (r.kind == Reply::Kind::returned) return r.value;
            const std::size_t before = stack_.size();
            handle(r);
            idle = stack_.size() == before ? idle + 1 : 0;
            if (idle >= kMaxIdleAnswers)
                throw NonRetriableError(fmt::format(
                    "the app answered {} times in a row with nothing new to run", idle));
        }
    }

  private:
    // The run's record as the SDK's `steps`: each operation replayed by its kind (a step
    // retrying is run again here). A call of Cairn's own still retrying is run too, and
    // its answer returned to be handled.
    std::optional<Reply> replay() {
        for (const Context::Recorded& op : ctx_.recorded()) {
            ++ops_;
            if (op.key.starts_with(kCallKey)) {
                if (op.status == "completed") {
                    ctx_.step(op.key, [] { return json(nullptr); });
                    continue;
                }
                return to_reply(ctx_.step(op.key, [&] { return call_attempt(); }));
            }
            if (op.key == kStartKey) {
                ctx_.sleep_until(op.key, 0);
            } else if (op.kind == "step") {
                record(op.key, ctx_.step(op.key, [&] { return run_step(op.key); }));
            } else if (op.kind == "sleep") {
                ctx_.sleep_until(op.key, 0);
                record(op.key, json{{"data", nullptr}});
            } else if (op.kind == "wait") {
                const auto ev = ctx_.wait_for_event(op.key, "", "", milliseconds(0));
                record(op.key, json{{"data", ev ? sdk_event(*ev) : json(nullptr)}});
            } else if (op.kind == "invoke") {
                record(op.key, invoke(op.key, "", json::object(), std::nullopt));
            }
        }
        return std::nullopt;
    }

    void record(const std::string& id, json value) {
        steps_[id] = std::move(value);
        stack_.push_back(id);
    }

    // One request to the app.
    Reply call(std::string_view step_id, int attempt) {
        if (fn_.removed.load())
            throw NonRetriableError(fmt::format("function '{}' was removed from app '{}' by a sync",
                                                fn_.config.slug, fn_.app_id));
        json ctx = {{"run_id", ctx_.run_id()},
                    {"attempt", attempt},
                    {"max_attempts", fn_.config.retries + 1},
                    {"disable_immediate_execution", false},
                    {"use_api", false},
                    {"stack",
                     {{"stack", stack_},
                      {"current", stack_.empty() ? 0 : static_cast<int>(stack_.size()) - 1}}}};
        const json body = {{"version", 1},
                           {"event", event_},
                           {"events", events()},
                           {"steps", steps_},
                           {"ctx", std::move(ctx)}};
        const std::string text = canonical(body);
        std::vector<std::pair<std::string, std::string>> headers = {
            {"Content-Type", "application/json"},
            {"X-Inngest-Server-Kind", calls_.key ? "cloud" : "dev"},
            {"X-Run-ID", ctx_.run_id()},
            {"X-Inngest-Step-ID", std::string(step_id)}};
        const std::int64_t now = calls_.now_ms();
        if (calls_.key)
            headers.emplace_back("X-Inngest-Signature", calls_.key->sign(text, now / 1000));
        Reply r;
        HttpResponse resp;
        // A connection refused or reset at once (an app restarting) is tried again here a
        // few times over about three seconds before it counts as a failed attempt; a slow
        // failure (a timeout) is not.
        for (int tries = 0;; ++tries) {
            const std::int64_t started = calls_.now_ms();
            try {
                resp = calls_.transport->request("POST", url_for(fn_.config.url, step_id), headers,
                                                 text);
                break;
            } catch (const TransportError& e) {
                if (tries >= kQuickRetries || calls_.now_ms() - started > 1000) {
                    r.error = sdk_error(fmt::format("the app did not answer: {}", e.what()));
                    return r;
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(100) * (1 << tries));
            }
        }
        r.status = resp.status;
        return read(resp, now);
    }

    Reply read(const HttpResponse& resp, std::int64_t now) const {
        Reply r;
        r.status = resp.status;
        r.retry_after = retry_after_of(resp.header("retry-after"), now);
        const std::string no_retry = resp.header("x-inngest-no-retry");
        if (resp.status == 401 || resp.status == 403) {
            r.error = sdk_error(fmt::format(
                "the app refused Cairn's request ({}): its signing key (INNGEST_SIGNING_KEY) "
                "must be Cairn's (CAIRN_SIGNING_KEY)",
                resp.status));
            r.retriable = false;
            return r;
        }
        if (resp.header("x-inngest-sdk").empty()) {
            r.error = sdk_error(
                fmt::format("HTTP {} without an X-Inngest-SDK header: not an Inngest SDK's answer",
                            resp.status));
            return r;
        }
        if (calls_.key &&
            !calls_.key->verify(resp.header("x-inngest-signature"), resp.body, now / 1000)) {
            r.error =
                sdk_error("the app's response signature does not verify with CAIRN_SIGNING_KEY");
            r.retriable = false;
            return r;
        }
        r.retriable = no_retry != "true";
        std::string why;
        const json body = resp.body.empty() ? json(nullptr) : parse_untrusted_json(resp.body, why);
        if (resp.status == 206) {
            json ops = body.is_object() ? json::array({body}) : body;
            if (!ops.is_array() || ops.empty()) {
                r.error = sdk_error("a 206 answer without opcodes");
                return r;
            }
            r.kind = Reply::Kind::ops;
            r.value = std::move(ops);
            return r;
        }
        if (resp.status >= 200 && resp.status < 300) {
            r.kind = Reply::Kind::returned;
            r.value = body.is_discarded() ? json(resp.body) : body;
            return r;
        }
        r.error =
            body.is_object()
                ? body
                : sdk_error(fmt::format("HTTP {}: {}", resp.status, resp.body.substr(0, 500)));
        if (!r.error.contains("message")) r.error["message"] = fmt::format("HTTP {}", resp.status);
        r.retriable = no_retry != "true" && resp.status != 400;
        return r;
    }

    // A failed request outside any step: retried as a step of Cairn's own (the app is
    // called again with the same state), whose answer is recorded when it succeeds.
    Reply retried_call(Reply first) {
        const std::string key = fmt::format("{}{}", kCallKey, ops_++);
        bool used = false;
        const json answer = ctx_.step(key, [&]() -> json {
            if (!used) {
                used = true;
                fail(first);
            }
            return call_attempt();
        });
        return to_reply(answer);
    }

    json call_attempt() {
        Reply r = call("step", ctx_.attempt() - 1);
        if (r.kind == Reply::Kind::failed) fail(r);
        return {{"kind", r.kind == Reply::Kind::returned ? "returned" : "ops"}, {"value", r.value}};
    }

    static Reply to_reply(const json& answer) {
        Reply r;
        r.kind = answer.value("kind", "") == "returned" ? Reply::Kind::returned : Reply::Kind::ops;
        r.value = answer.value("value", json(nullptr));
        return r;
    }

    [[noreturn]] static void fail(const Reply& r) {
        const std::string name = r.error.value("name", "Error");
        const std::string text = r.error.value("message", "unknown error");
        std::string message = name == "Error" ? text : fmt::format("{}: {}", name, text);
        // Each attempt's record shows what the app answered.
        if (r.status != 0) message += fmt::format(" (HTTP {})", r.status);
        if (!r.retriable) throw NonRetriableError(message);
        if (r.retry_after) throw RetryAfterError(message, *r.retry_after);
        throw std::runtime_error(message);
    }

    // One attempt of the step `id` on its own request: its result ({"data"} or, once it
    // may not be tried again, {"error"} for the function to catch), or a throw to retry.
    json run_step(const std::string& id) { return step_outcome(id, call(id, ctx_.attempt() - 1)); }

    json step_outcome(const std::string& id, const Reply& r) {
        const bool last = ctx_.attempt() >= fn_.config.retries + 1;
        if (r.kind == Reply::Kind::ops) {
            for (const json& op : r.value) {
                if (!op.is_object() || op.value("id", "") != id) continue;
                const std::string code = op.value("op", "");
                if (code == "StepRun") return {{"data", op.value("data", json(nullptr))}};
                const json error = op.contains("error") && op["error"].is_object()
                                       ? op["error"]
                                       : sdk_error("the step failed");
                if (code == "StepFailed") return {{"error", error}};
                if (code == "StepError") {
                    Reply failed = r;
                    failed.error = error;
                    if (!r.retriable || last) return {{"error", error}};
                    fail(failed);
                }
            }
            Reply odd = r;
            odd.kind = Reply::Kind::failed;
            odd.error = sdk_error(fmt::format("the app did not run step {}", id));
            if (last) return {{"error", odd.error}};
            fail(odd);
        }
        if (r.kind == Reply::Kind::returned) {
            Reply odd = r;
            odd.error =
                sdk_error(fmt::format("the function returned instead of running step {}", id));
            if (last) return {{"error", odd.error}};
            fail(odd);
        }
        if (!r.retriable || last) return {{"error", r.error}};
        fail(r);
    }

    json invoke(const std::string& id, const std::string& function_id, const json& data,
                std::optional<milliseconds> timeout) {
        try {
            return {{"data", ctx_.invoke(id, function_id, data, timeout)}};
        } catch (const StepFailed& e) {
            const json& err = e.error();
            return {
                {"error", sdk_error(err.value("message", "the invoked function failed"),
                                    err.value("type", "") == "timeout" ? "InngestInvokeTimeoutError"
                                                                       : "Error")}};
        }
    }

    // The opcodes of one answer: planned steps all at once (ctx.parallel), then each other
    // opcode in order.
    void handle(const Reply& r) {
        const json& ops = r.value;
        std::vector<std::pair<std::string, std::function<json()>>> planned;
        std::vector<const json*> rest;
        for (const json& op : ops) {
            if (!op.is_object() || !op.contains("id") || !op["id"].is_string())
                throw NonRetriableError("the app answered an opcode without an id");
            const std::string id = op["id"].get<std::string>();
            if (steps_.contains(id)) continue;  // reported again: already done
            if (op.value("op", "") == "StepPlanned" && ops.size() > 1) {
                planned.emplace_back(id, [this, id] { return run_step(id); });
            } else {
                rest.push_back(&op);
            }
        }
        if (!planned.empty()) {
            ops_ += planned.size();
            const json results = ctx_.parallel(planned);
            for (const auto& [id, fn] : planned) record(id, results.at(id));
        }
        for (const json* op : rest) one(*op, r);
    }

    void one(const json& op, const Reply& r) {
        const std::string id = op["id"].get<std::string>();
        const std::string code = op.value("op", "");
        const json opts = op.value("opts", json::object());
        const std::int64_t now = calls_.now_ms();
        ++ops_;
        if (code == "StepRun" || code == "StepError" || code == "StepFailed") {
            bool used = false;
            Reply here = r;  // its headers (no retry, retry after) apply to this op
            here.value = json::array({op});
            record(id, ctx_.step(id, [&] {
                if (used) return run_step(id);
                used = true;
                return step_outcome(id, here);
            }));
        } else if (code == "StepPlanned") {
            record(id, ctx_.step(id, [&] { return run_step(id); }));
        } else if (code == "Sleep") {
            const std::string when = opts.contains("duration") && opts["duration"].is_string()
                                         ? opts["duration"].get<std::string>()
                                         : op.value("name", "");
            const auto until = parse_deadline(when, now);
            if (!until)
                throw NonRetriableError(
                    fmt::format("step.sleep: '{}' is not a duration or a time", when));
            ctx_.sleep_until(id, *until);
            record(id, json{{"data", nullptr}});
        } else if (code == "WaitForEvent") {
            const std::string name = opts.contains("event") && opts["event"].is_string()
                                         ? opts["event"].get<std::string>()
                                         : op.value("name", "");
            const std::string timeout = opts.value("timeout", "");
            const auto until =
                timeout.empty() ? std::optional<std::int64_t>(now) : parse_deadline(timeout, now);
            if (!until)
                throw NonRetriableError(fmt::format(
                    "step.waitForEvent: timeout '{}' is not a duration or a time", timeout));
            const milliseconds wait(std::max<std::int64_t>(*until - now, 0));
            const std::string expression = opts.value("if", "");
            const auto ev = expression.empty()
                                ? ctx_.wait_for_event(id, name, "", wait)
                                : ctx_.wait_for_event_where(id, name, expression, wait);
            record(id, json{{"data", ev ? sdk_event(*ev) : json(nullptr)}});
        } else if (code == "InvokeFunction") {
            const std::string target = opts.value("function_id", "");
            const json payload = opts.value("payload", json::object());
            std::optional<milliseconds> timeout;
            if (const std::string t = opts.value("timeout", ""); !t.empty()) {
                if (const auto until = parse_deadline(t, now))
                    timeout = milliseconds(std::max<std::int64_t>(*until - now, 1));
            }
            record(id, invoke(id, target, payload.value("data", json::object()),
                              timeout.value_or(milliseconds(kNeverMs))));
        } else if (code == "None") {
            --ops_;
        } else {
            throw NonRetriableError(
                fmt::format("the app answered an opcode Cairn does not support: '{}'", code));
        }
    }

    const Function& fn_;
    const Calls& calls_;
    Context& ctx_;
    json event_;
    json steps_ = json::object();
    std::vector<std::string> stack_;
    std::size_t ops_ = 0;  // operations taken so far (keys of Cairn's own calls are unique)
};

// A failed attempt's message without the " (HTTP nnn)" Driver::fail adds: what the app said.
std::string without_status(std::string message) {
    const std::size_t at = message.rfind(" (HTTP ");
    if (at != std::string::npos && message.ends_with(")")) message.erase(at);
    return message;
}

// A run's end as the Inngest server announces it: inngest/function.finished, and
// inngest/function.failed or .cancelled with the same data (an onFailure handler is a
// function triggered by function.failed). Runs started by function.finished or .failed
// announce nothing, so no handler starts itself again.
std::vector<EventInput> end_events(const std::string& slug, const RunEnded& end) {
    const std::string trigger = end.event.is_object() ? end.event.value("name", "") : "";
    if (trigger == "inngest/function.finished" || trigger == "inngest/function.failed") return {};
    const json event = end.event.is_object() ? sdk_event(end.event) : json::object();
    std::string status = end.status;
    if (!status.empty()) status[0] = static_cast<char>(std::toupper(status[0]));
    json data = {{"function_id", slug},
                 {"run_id", end.run_id},
                 {"event", event},
                 {"events", json::array({event})},
                 {"_inngest", {{"status", status}}}};
    std::vector<EventInput> out;
    if (end.status == "completed") {
        data["result"] = end.output;
    } else if (end.status == "failed") {
        const std::string message =
            end.error.is_object() ? end.error.value("message", "") : std::string();
        data["error"] =
            sdk_error(message.empty() ? "the function failed" : without_status(message));
        out.push_back(EventInput{.name = "inngest/function.failed", .data = data});
    } else if (end.status == "cancelled") {
        out.push_back(EventInput{.name = "inngest/function.cancelled", .data = data});
    }
    out.insert(out.begin(), EventInput{.name = "inngest/function.finished", .data = data});
    return out;
}

}  // namespace

json sdk_event(const json& event) {
    std::string name = event.value("name", "");
    json data = event.value("data", json::object());
    if (name == "cairn/invoke") {
        name = "inngest/function.invoked";
    } else if (name == "cairn/cron") {
        name = "inngest/scheduled.timer";
        data = {{"cron", data.value("cron", "")}};
    }
    return {{"name", name},
            {"data", data.is_object() ? data : json::object()},
            {"id", event.value("id", "")},
            {"ts", event.value("ts", std::int64_t{0})},
            {"user", json::object()}};
}

Workflow sdk_workflow(std::shared_ptr<Function> fn, std::shared_ptr<const Calls> calls) {
    Workflow w;
    const FunctionConfig& c = fn->config;
    w.id = c.slug;
    w.app = fn->app_id;
    w.retry.max_attempts = c.retries + 1;
    bool any_expression = false;
    for (const Trigger& t : c.triggers) {
        if (!t.cron.empty()) {
            w.cron = t.cron;
            continue;
        }
        w.triggers.push_back(t.event);
        if (!t.expression.empty()) any_expression = true;
    }
    if (any_expression) {
        struct Filter {
            std::string event;
            std::optional<engine::Expression> expression;
        };
        auto parsed = std::make_shared<std::vector<Filter>>();
        for (const Trigger& t : c.triggers) {
            if (t.cron.empty())
                parsed->push_back(
                    {t.event, t.expression.empty()
                                  ? std::nullopt
                                  : std::optional(engine::Expression::parse(t.expression))});
        }
        w.filter = [parsed](const json& ev) {
            const std::string name = ev.value("name", "");
            for (const Filter& f : *parsed) {
                if (!trigger_matches(f.event, name)) continue;
                if (!f.expression || f.expression->matches(ev)) return true;
            }
            return false;
        };
    }
    for (const CancelSpec& cs : c.cancel)
        w.cancel_on.push_back(CancelOn{cs.event, "", cs.timeout, cs.expression});
    w.flow = c.flow;
    w.fn = [fn, calls](Context& ctx) { return Driver(*fn, *calls, ctx).run(); };
    w.on_end = [slug = c.slug](const RunEnded& end) { return end_events(slug, end); };
    return w;
}

Workflow removed_workflow(const std::string& slug, const std::string& app_id) {
    Workflow w;
    w.id = slug;
    w.app = app_id;
    w.retry.max_attempts = 1;
    w.fn = [slug, app_id](Context&) -> json {
        throw NonRetriableError(
            fmt::format("function '{}' was removed from app '{}' by a sync", slug, app_id));
    };
    w.on_end = [slug](const RunEnded& end) { return end_events(slug, end); };
    return w;
}

}  // namespace cairn::sdk
