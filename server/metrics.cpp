#include "server/metrics.hpp"

#include <fmt/format.h>

#include "engine/engine.hpp"
#include "storage/run_store.hpp"

namespace cairn::server {

bool Metrics::authorized(const std::string& authorization) const {
    if (key_.empty()) return true;
    const std::string expected = "Bearer " + key_;
    if (authorization.size() != expected.size()) return false;
    unsigned char diff = 0;  // compared in constant time: the key is a secret
    for (std::size_t i = 0; i < expected.size(); ++i)
        diff |= static_cast<unsigned char>(authorization[i] ^ expected[i]);
    return diff == 0;
}
namespace {

// Label values escape backslash, quote and newline.
std::string label(std::string_view v) {
    std::string out;
    for (char c : v) {
        if (c == '\\' || c == '"') out.push_back('\\');
        if (c == '\n') {
            out += "\\n";
            continue;
        }
        out.push_back(c);
    }
    return out;
}

void histogram(std::string& out, std::string_view name, std::string_view labels,
               const Histogram::Snapshot& s) {
    const std::string prefix = labels.empty() ? "" : std::string(labels) + ",";
    const std::string plain = labels.empty() ? "" : fmt::format("{{{}}}", labels);
    for (std::size_t i = 0; i < Histogram::kBounds.size(); ++i) {
        out += fmt::format("{}_bucket{{{}le=\"{}\"}} {}\n", name, prefix, Histogram::kBounds[i],
                           s.cumulative[i]);
    }
    out += fmt::format("{}_bucket{{{}le=\"+Inf\"}} {}\n", name, prefix, s.count);
    out += fmt::format("{}_sum{} {}\n{}_count{} {}\n", name, plain, s.sum, name, plain, s.count);
}

// The method as a label: one of the methods HTTP defines, else "other". A client chooses
// the method token freely, and every distinct label would be a series kept forever.
std::string_view method_label(std::string_view method) {
    static constexpr std::string_view kKnown[] = {"GET",    "HEAD",    "POST",    "PUT",  "PATCH",
                                                  "DELETE", "OPTIONS", "CONNECT", "TRACE"};
    for (std::string_view m : kKnown)
        if (m == method) return m;
    return "other";
}

}  // namespace

void Metrics::observe_http(const std::string& route, const std::string& method, int status,
                           double seconds) {
    {
        std::lock_guard lock(mu_);
        ++requests_[{route, std::string(method_label(method)), status}];
    }
    http_seconds_.observe(seconds);
}

std::string Metrics::render(storage::RunStore& store, const engine::EngineStats& stats,
                            std::span<const storage::QueueDepth> depths, std::int64_t now) const {
    std::string out;
    auto family = [&out](std::string_view name, std::string_view type, std::string_view help) {
        out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
    };
    auto scalar = [&](std::string_view name, std::string_view type, std::string_view help,
                      auto value) {
        family(name, type, help);
        out += fmt::format("{} {}\n", name, value);
    };

    family("cairn_runs", "gauge", "Runs in the database by workflow and status.");
    for (const auto& c : store.counts_by_workflow_and_status()) {
        out += fmt::format("cairn_runs{{workflow=\"{}\",status=\"{}\"}} {}\n", label(c.workflow_id),
                           label(c.status), c.runs);
    }
    const auto q = store.queue_stats(now);
    scalar("cairn_queue_pending", "gauge", "Runs scheduled now or later (not finished).",
           q.pending);
    scalar("cairn_queue_due", "gauge", "Runs due now and not claimed by a worker.", q.due);
    scalar("cairn_queue_oldest_due_age_seconds", "gauge",
           "How long the oldest unclaimed due run has waited.",
           static_cast<double>(q.oldest_due_age_ms.value_or(0)) / 1000.0);

    family("cairn_queue_depth", "gauge",
           "Unfinished runs by workflow and reason: running, due, scheduled (later), or held "
           "back by flow control (admission, concurrency, throttle, debounce, batch).");
    for (const auto& d : depths) {
        out += fmt::format("cairn_queue_depth{{workflow=\"{}\",reason=\"{}\"}} {}\n",
                           label(d.workflow_id), label(d.reason), d.items);
    }

    family("cairn_workflow_paused", "gauge",
           "1 for each paused workflow (its runs queue up and none starts).");
    for (const auto& [workflow, at] : store.paused_workflows())
        out += fmt::format("cairn_workflow_paused{{workflow=\"{}\"}} 1\n", label(workflow));

    family("cairn_step_duration_seconds", "histogram", "Step attempt durations in this process.");
    for (const auto& [workflow, snap] : stats.step_seconds) {
        histogram(out, "cairn_step_duration_seconds",
                  fmt::format("workflow=\"{}\"", label(workflow)), snap);
    }
    scalar("cairn_step_retries_total", "counter",
           "Failed step attempts scheduled again, in this process.", stats.retries);
    scalar("cairn_executions_total", "counter", "Run executions (claims) in this process.",
           stats.executions);
    scalar("cairn_runs_ended_total", "counter",
           "Runs this process's executions ended (completed, failed or cancelled).",
           stats.runs_ended);
    scalar("cairn_leases_lost_total", "counter",
           "Executions abandoned because another worker took the run over.", stats.leases_lost);

    std::lock_guard lock(mu_);
    family("cairn_http_requests_total", "counter", "HTTP requests by route, method and status.");
    for (const auto& [key, n] : requests_) {
        const auto& [route, method, status] = key;
        out += fmt::format(
            "cairn_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{}\"}} {}\n",
            label(route), label(method), status, n);
    }
    family("cairn_http_request_duration_seconds", "histogram", "HTTP request handling time.");
    histogram(out, "cairn_http_request_duration_seconds", "", http_seconds_.snapshot());
    return out;
}

}  // namespace cairn::server
