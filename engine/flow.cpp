// Flow control's rules: what an event's run does at its start (rate limit, idempotency,
// singleton, debounce, batching, priority) and admission (concurrency, throttle).

#include "engine/detail/flow.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>
#include <stdexcept>

#include "engine/detail/json_text.hpp"
#include "engine/engine.hpp"
#include "engine/expression.hpp"

namespace cairn::engine::detail {

namespace {

using std::chrono::milliseconds;

// A key expression's value for the event, as text: a string as itself, null (or no
// expression) as "", anything else as its JSON.
std::string key_value(const std::string& expression, const json& ev) {
    if (expression.empty()) return {};
    const json v = Expression::parse(expression).evaluate(ev);
    if (v.is_null()) return {};
    return v.is_string() ? v.get<std::string>() : v.dump();
}

// A key of flow_state: the control's kind, the workflow and the key's value, as JSON text
// (unambiguous whatever the value holds).
std::string state_key(std::string_view kind, const std::string& workflow_id,
                      const std::string& value) {
    return json::array({kind, workflow_id, value}).dump();
}

std::string concurrency_kind(std::size_t index) {
    return fmt::format("c{}", index);
}

std::int64_t interval_of(milliseconds period, int limit) {
    return std::max<std::int64_t>(1, period.count() / std::max(1, limit));
}

void check_key(const Workflow& w, std::string_view what, const std::string& expression) {
    if (expression.empty()) return;
    try {
        Expression::parse(expression);
    } catch (const ExpressionError& e) {
        throw std::invalid_argument(fmt::format("workflow '{}': {} key: {}", w.id, what, e.what()));
    }
}

void check_positive(const Workflow& w, std::string_view what, std::int64_t value) {
    if (value <= 0)
        throw std::invalid_argument(fmt::format("workflow '{}': {} must be positive", w.id, what));
}

// "customer_id=42" for the key `event.data.customer_id` and the value 42; the expression
// whole when it is no plain path.
std::string describe_key(const std::string& expression, const std::string& value) {
    if (expression.empty()) return {};
    std::string name = expression;
    const bool path = std::all_of(name.begin(), name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.';
    });
    if (path && name.find('.') != std::string::npos) name = name.substr(name.rfind('.') + 1);
    return fmt::format(" for {}={}", name, value);
}

std::string clock_time(std::int64_t ms) {
    const std::time_t secs = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    return fmt::format("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec);
}

}  // namespace

Gcra gcra(std::optional<std::int64_t> tat, std::int64_t now, std::int64_t interval,
          std::int64_t tolerance) {
    const std::int64_t t = tat.value_or(now);
    const std::int64_t allowed = std::max(now, t - tolerance);
    return Gcra{allowed, std::max(t, allowed) + interval};
}

Flow::Flow(storage::Database& db, storage::RunStore& store, const Registry& registry)
    : db_(db), runs_(store), flows_(db), registry_(registry) {}

void Flow::check(const Workflow& w) {
    const FlowControl& f = w.flow;
    if (f.concurrency.size() > 2)
        throw std::invalid_argument(
            fmt::format("workflow '{}': at most two concurrency limits", w.id));
    for (const Concurrency& c : f.concurrency) {
        check_positive(w, "concurrency limit", c.limit);
        check_key(w, "concurrency", c.key);
    }
    if (f.throttle) {
        check_positive(w, "throttle limit", f.throttle->limit);
        check_positive(w, "throttle period", f.throttle->period.count());
        check_positive(w, "throttle burst", f.throttle->burst);
        check_key(w, "throttle", f.throttle->key);
    }
    if (f.rate_limit) {
        check_positive(w, "rate limit", f.rate_limit->limit);
        check_positive(w, "rate limit period", f.rate_limit->period.count());
        if (f.rate_limit->limit > 10'000)
            throw std::invalid_argument(
                fmt::format("workflow '{}': rate limit must be at most 10000", w.id));
        check_key(w, "rate limit", f.rate_limit->key);
    }
    if (f.debounce) {
        check_positive(w, "debounce period", f.debounce->period.count());
        if (f.debounce->timeout)
            check_positive(w, "debounce timeout", f.debounce->timeout->count());
        check_key(w, "debounce", f.debounce->key);
    }
    if (f.batch) {
        check_positive(w, "batch size", f.batch->max_size);
        check_positive(w, "batch timeout", f.batch->timeout.count());
        check_key(w, "batch", f.batch->key);
    }
    if (f.debounce && f.batch)
        throw std::invalid_argument(
            fmt::format("workflow '{}': debounce and batching do not combine", w.id));
    check_key(w, "priority", f.priority);
    if (f.singleton) check_key(w, "singleton", f.singleton->key);
    if (f.idempotency) {
        check_key(w, "idempotency", f.idempotency->key);
        check_positive(w, "idempotency window", f.idempotency->window.count());
    }
}

std::optional<Flow::Started> Flow::start(storage::Transaction& tx, const Workflow& w,
                                         const storage::NewRun& run, const json& ev,
                                         std::int64_t now,
                                         const std::function<void(const std::string&)>& cancel) {
    const FlowControl& f = w.flow;
    const std::string event_id = ev.value("id", "");
    if (f.rate_limit) {
        // At most `limit` starts in any `period`: the key keeps its recent start times.
        const std::string key = state_key("r", w.id, key_value(f.rate_limit->key, ev));
        storage::KeyState s = flows_.lock(tx, key);
        std::vector<std::int64_t> times;
        if (s.times) times = json::parse(*s.times).get<std::vector<std::int64_t>>();
        std::erase_if(times,
                      [&](std::int64_t t) { return t <= now - f.rate_limit->period.count(); });
        if (static_cast<int>(times.size()) >= f.rate_limit->limit) {
            flows_.skip(tx, event_id, w.id, "rate limited", now);
            return std::nullopt;
        }
        times.push_back(now);
        s.times = json(times).dump();
        s.at = now;  // the last start, for retention
        flows_.put(tx, key, s);
    }
    if (f.idempotency) {
        const std::string key = state_key("i", w.id, key_value(f.idempotency->key, ev));
        storage::KeyState s = flows_.lock(tx, key);
        if (s.at && *s.at > now) {
            flows_.skip(tx, event_id, w.id, "idempotency", now);
            return std::nullopt;
        }
        s.at = now + f.idempotency->window.count();
        flows_.put(tx, key, s);
    }
    std::optional<std::string> singleton_key;
    if (f.singleton) {
        singleton_key = state_key("s", w.id, key_value(f.singleton->key, ev));
        const storage::KeyState s = flows_.lock(tx, *singleton_key);
        if (s.run_id) {
            const std::string status = runs_.run_status(tx, *s.run_id);
            const bool unfinished =
                status == storage::run_status::kQueued || status == storage::run_status::kRunning ||
                status == storage::run_status::kSleeping || status == storage::run_status::kWaiting;
            if (unfinished && f.singleton->mode == Singleton::Mode::skip) {
                flows_.skip(tx, event_id, w.id, "singleton", now);
                return std::nullopt;
            }
            if (unfinished) cancel(*s.run_id);
        }
    }

    storage::FlowRun fr;
    fr.run = run;
    fr.start_at = now;
    if (!f.priority.empty()) {
        const json p = Expression::parse(f.priority).evaluate(ev);
        if (p.is_number()) {
            const double secs = std::clamp(p.get<double>(), -double(FlowControl::kMaxPriority),
                                           double(FlowControl::kMaxPriority));
            fr.start_at = now - static_cast<std::int64_t>(secs * 1000);
        }
    }
    std::vector<std::string> conc;
    for (std::size_t i = 0; i < f.concurrency.size(); ++i)
        conc.push_back(state_key(concurrency_kind(i), w.id, key_value(f.concurrency[i].key, ev)));
    std::sort(conc.begin(), conc.end());
    if (!conc.empty()) fr.conc1 = conc[0];
    if (conc.size() > 1) fr.conc2 = conc[1];
    if (f.throttle)
        fr.flow = json{{"throttle", state_key("t", w.id, key_value(f.throttle->key, ev))}}.dump();
    fr.admit = !conc.empty() || f.throttle || f.debounce || f.batch;

    std::string id;
    if (f.debounce) {
        // The pending run takes this event and waits `period` more, up to `timeout` after
        // the first event; none pending (or admitted already): a new one.
        const std::string key = state_key("d", w.id, key_value(f.debounce->key, ev));
        storage::KeyState s = flows_.lock(tx, key);
        const auto until = [&](std::int64_t first) {
            std::int64_t at = now + f.debounce->period.count();
            if (f.debounce->timeout) at = std::min(at, first + f.debounce->timeout->count());
            return at;
        };
        if (s.run_id && s.at && flows_.still_held(tx, *s.run_id, "debounce")) {
            flows_.retarget(tx, *s.run_id, event_id, until(*s.at), now);
            return Started{*s.run_id, false};
        }
        fr.start_at = until(now);
        fr.held = "debounce";
        id = flows_.add_run(tx, event_id, fr, now);
        flows_.put(tx, key, storage::KeyState{0, now, id, std::nullopt});
    } else if (f.batch) {
        const std::string key = state_key("b", w.id, key_value(f.batch->key, ev));
        storage::KeyState s = flows_.lock(tx, key);
        if (s.run_id && s.n < f.batch->max_size && flows_.still_held(tx, *s.run_id, "batch")) {
            flows_.add_to_batch(tx, *s.run_id, s.n, event_id);
            ++s.n;
            if (s.n >= f.batch->max_size) flows_.admit_at(tx, *s.run_id, now);  // full
            flows_.put(tx, key, s);
            return Started{*s.run_id, false};
        }
        fr.start_at = f.batch->max_size <= 1 ? now : now + f.batch->timeout.count();
        fr.held = "batch";
        id = flows_.add_run(tx, event_id, fr, now);
        flows_.put(tx, key, storage::KeyState{1, now, id, std::nullopt});
    } else {
        id = flows_.add_run(tx, event_id, fr, now);
    }
    if (singleton_key) flows_.put(tx, *singleton_key, storage::KeyState{0, now, id, {}});
    return Started{id, true};
}

Flow::Admitted Flow::admit(std::int64_t now, int limit) {
    Admitted out;
    if (!registry_.any_flow()) return out;
    const storage::Value workflows = runs_.claim_set();
    // Another pass when this one sent parked items back to admission, or took a full page
    // of which some parked: those left the page, and items behind them may be admissible.
    for (int pass = 0; pass < 8 && out.admitted < limit; ++pass) {
        const auto due = flows_.admission_due(workflows);
        out.next_at = due.next_at && *due.next_at > now ? due.next_at : std::nullopt;
        if (!due.releases && (!due.next_at || *due.next_at > now || limit <= 0)) break;
        if (!admit_once(now, limit - out.admitted, workflows, out)) break;
    }
    return out;
}

bool Flow::admit_once(std::int64_t now, int limit, const storage::Value& workflows, Admitted& out) {
    return db_.transact([&](storage::Transaction& tx) {
        int admitted = 0;
        bool promoted = false;
        const std::vector<std::string> freed = flows_.take_releases(tx, 1000);
        const std::vector<storage::PendingItem> items =
            limit > 0 ? flows_.pending(tx, now, limit, workflows)
                      : std::vector<storage::PendingItem>{};
        // Every key the pass may touch, locked in one order (the keys' own), so that
        // admissions in several processes never wait for each other in a cycle (writers
        // lock no key: their trigger appends to flow_releases).
        std::map<std::string, storage::KeyState> keys;
        std::map<std::string, std::string> throttle_of;  // run id -> throttle key
        for (const std::string& k : freed) keys.emplace(k, storage::KeyState{});
        for (const auto& item : items) {
            for (const auto* k : {&item.conc1, &item.conc2})
                if (*k) keys.emplace(**k, storage::KeyState{});
            if (item.flow) {
                const json flow = json::parse(*item.flow, nullptr, false);
                if (flow.is_object() && flow.contains("throttle")) {
                    throttle_of[item.run_id] = flow["throttle"].get<std::string>();
                    keys.emplace(flow["throttle"].get<std::string>(), storage::KeyState{});
                }
            }
        }
        flows_.lock(tx, keys);
        std::set<std::string> changed;
        std::vector<std::string> admit_ids;
        // Each slot given back frees one, and lets the oldest item parked on its key back:
        // one statement for the keys freed once, another for those freed twice, ...
        std::map<std::string, int> times_freed;
        for (const std::string& k : freed) {
            keys[k].n = std::max<std::int64_t>(0, keys[k].n - 1);
            changed.insert(k);
            ++times_freed[k];
        }
        for (int round = 1;; ++round) {
            std::vector<std::string> batch;
            for (const auto& [k, n] : times_freed)
                if (n >= round) batch.push_back(k);
            if (batch.empty()) break;
            promoted = flows_.promote(tx, batch) > 0 || promoted;
        }
        // The limit of a concurrency key of `w` (its kind names the constraint).
        const auto limit_of = [](const Workflow& w, const std::string& key) {
            const json parts = json::parse(key);
            const std::size_t index = parts[0].get<std::string>() == "c1" ? 1 : 0;
            return index < w.flow.concurrency.size() ? w.flow.concurrency[index].limit : 1;
        };
        const auto top_up = [&](const Workflow& w, const std::optional<std::string>& key) {
            // A slot still free on the key (a limit raised, a parked run cancelled): the
            // next parked item goes to admission too.
            if (key && keys[*key].n < limit_of(w, *key))
                promoted = flows_.promote(tx, *key) || promoted;
        };
        for (const auto& item : items) {
            const Workflow* w = registry_.find(item.workflow_id);
            if (item.ended || w == nullptr) {
                flows_.drop(tx, item.run_id);
                if (w != nullptr) {
                    top_up(*w, item.conc1);
                    top_up(*w, item.conc2);
                }
                continue;
            }
            std::optional<std::string> full;
            for (const auto* k : {&item.conc1, &item.conc2}) {
                if (*k && !full && keys[**k].n >= limit_of(*w, **k)) full = **k;
            }
            if (full) {
                flows_.park(tx, item.run_id, *full);
                continue;
            }
            if (auto t = throttle_of.find(item.run_id);
                t != throttle_of.end() && w->flow.throttle) {
                const Throttle& th = *w->flow.throttle;
                const std::int64_t interval = interval_of(th.period, th.limit);
                storage::KeyState& s = keys[t->second];
                // Each run reserves its turn as it is first seen: later arrivals queue behind
                // it whatever order admission sees them in (FIFO per key).
                const Gcra g = gcra(s.at, now, interval, (th.burst - 1) * interval);
                s.at = g.next_tat;
                changed.insert(t->second);
                if (g.allowed_at > now) {
                    flows_.defer(tx, item.run_id, g.allowed_at, "throttle");
                    out.next_at = std::min(out.next_at.value_or(g.allowed_at), g.allowed_at);
                    continue;
                }
            }
            for (const auto* k : {&item.conc1, &item.conc2}) {
                if (!*k) continue;
                ++keys[**k].n;
                changed.insert(**k);
            }
            admit_ids.push_back(item.run_id);
            ++admitted;
            top_up(*w, item.conc1);
            top_up(*w, item.conc2);
        }
        flows_.admit(tx, admit_ids, now);
        std::map<std::string, storage::KeyState> dirty;
        for (const std::string& k : changed) dirty[k] = keys[k];
        flows_.put(tx, dirty);
        out.admitted += admitted;
        return promoted || (static_cast<int>(items.size()) == limit && admitted < limit);
    });
}

std::optional<Flow::HeldBack> Flow::held_back(const std::string& run_id, const FlowControl* flow) {
    const auto h = flows_.held(run_id);
    if (!h) return std::nullopt;
    HeldBack out{h->reason, {}, std::nullopt};
    if (h->reason == "concurrency" && h->key) {
        const json parts = json::parse(*h->key, nullptr, false);
        std::string detail;
        int limit = 0;
        if (parts.is_array() && parts.size() == 3 && flow != nullptr) {
            const std::size_t index = parts[0] == "c1" ? 1 : 0;
            if (index < flow->concurrency.size()) {
                limit = flow->concurrency[index].limit;
                detail = describe_key(flow->concurrency[index].key, parts[2].get<std::string>());
            }
        }
        out.message = fmt::format("queued: concurrency {}/{}{}", h->in_use, limit, detail);
    } else if (h->reason == "throttle" || h->reason == "debounce") {
        out.until = h->admit_at;
        out.message =
            fmt::format("{} until {}", h->reason == "throttle" ? "throttled" : "debounced",
                        clock_time(h->admit_at.value_or(0)));
    } else if (h->reason == "batch") {
        out.until = h->admit_at;
        const int size = flow != nullptr && flow->batch ? flow->batch->max_size : 0;
        out.message = fmt::format("in batch ({}/{})", h->batch_size, size);
    } else {
        out.message = "queued: waiting for admission";
    }
    return out;
}

}  // namespace cairn::engine::detail

namespace cairn::engine {

namespace {

std::string per(const std::string& key) {
    return key.empty() ? "" : " per " + key;
}

std::string span_text(std::chrono::milliseconds d) {
    const auto ms = d.count();
    if (ms % 3'600'000 == 0) return fmt::format("{}h", ms / 3'600'000);
    if (ms % 60'000 == 0) return fmt::format("{}m", ms / 60'000);
    if (ms % 1000 == 0) return fmt::format("{}s", ms / 1000);
    return fmt::format("{}ms", ms);
}

}  // namespace

json flow_control_json(const FlowControl& f) {
    if (!f.any()) return nullptr;
    json out = json::object();
    std::vector<std::string> parts;
    if (!f.concurrency.empty()) {
        out["concurrency"] = json::array();
        for (const Concurrency& c : f.concurrency) {
            out["concurrency"].push_back({{"limit", c.limit}, {"key", c.key}});
            parts.push_back(fmt::format("concurrency {}{}", c.limit, per(c.key)));
        }
    }
    if (const auto& t = f.throttle) {
        out["throttle"] = {{"limit", t->limit},
                           {"period_ms", t->period.count()},
                           {"burst", t->burst},
                           {"key", t->key}};
        parts.push_back(
            fmt::format("throttle {}/{}{}", t->limit, span_text(t->period), per(t->key)));
    }
    if (const auto& r = f.rate_limit) {
        out["rate_limit"] = {
            {"limit", r->limit}, {"period_ms", r->period.count()}, {"key", r->key}};
        parts.push_back(
            fmt::format("rate limit {}/{}{}", r->limit, span_text(r->period), per(r->key)));
    }
    if (const auto& d = f.debounce) {
        out["debounce"] = {{"period_ms", d->period.count()},
                           {"key", d->key},
                           {"timeout_ms", d->timeout ? json(d->timeout->count()) : json(nullptr)}};
        parts.push_back(fmt::format("debounce {}{}", span_text(d->period), per(d->key)));
    }
    if (const auto& b = f.batch) {
        out["batch"] = {
            {"max_size", b->max_size}, {"timeout_ms", b->timeout.count()}, {"key", b->key}};
        parts.push_back(
            fmt::format("batch {} or {}{}", b->max_size, span_text(b->timeout), per(b->key)));
    }
    if (!f.priority.empty()) {
        out["priority"] = f.priority;
        parts.push_back("priority " + f.priority);
    }
    if (const auto& s = f.singleton) {
        const char* mode = s->mode == Singleton::Mode::skip ? "skip" : "cancel";
        out["singleton"] = {{"key", s->key}, {"mode", mode}};
        parts.push_back(fmt::format("singleton ({}){}", mode, per(s->key)));
    }
    if (const auto& i = f.idempotency) {
        out["idempotency"] = {{"key", i->key}, {"window_ms", i->window.count()}};
        parts.push_back(fmt::format("idempotency {}{}", span_text(i->window), per(i->key)));
    }
    std::string summary;
    for (const auto& p : parts) summary += (summary.empty() ? "" : "; ") + p;
    out["summary"] = summary;
    return out;
}

}  // namespace cairn::engine
