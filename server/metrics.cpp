#include "server/metrics.hpp"

#include <fmt/format.h>

#include "engine/engine.hpp"
#include "storage/run_store.hpp"

namespace cairn::server {
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

}  // namespace

void Metrics::observe_http(const std::string& route, const std::string& method, int status,
                           double seconds) {
    {
        std::lock_guard lock(mu_);
        ++requests_[{route, method, status}];
    }
    http_seconds_.observe(seconds);
}

std::string Metrics::render(storage::RunStore& store, const engine::EngineStats& stats,
                            std::int64_t now) const {
    std::string out;
    out +=
        "# HELP cairn_runs Runs in the database by workflow and status.\n# TYPE cairn_runs gauge\n";
    for (const auto& c : store.counts_by_workflow_and_status()) {
        out += fmt::format("cairn_runs{{workflow=\"{}\",status=\"{}\"}} {}\n", label(c.workflow_id),
                           label(c.status), c.runs);
    }
    const auto q = store.queue_stats(now);
    out +=
        "# HELP cairn_queue_pending Runs scheduled now or later (not finished).\n# TYPE "
        "cairn_queue_pending gauge\n";
    out += fmt::format("cairn_queue_pending {}\n", q.pending);
    out +=
        "# HELP cairn_queue_due Runs due now and not claimed by a worker.\n# TYPE cairn_queue_due "
        "gauge\n";
    out += fmt::format("cairn_queue_due {}\n", q.due);
    out +=
        "# HELP cairn_queue_oldest_due_age_seconds How long the oldest unclaimed due run has "
        "waited.\n"
        "# TYPE cairn_queue_oldest_due_age_seconds gauge\n";
    out += fmt::format("cairn_queue_oldest_due_age_seconds {}\n",
                       static_cast<double>(q.oldest_due_age_ms.value_or(0)) / 1000.0);

    out +=
        "# HELP cairn_step_duration_seconds Step attempt durations in this process.\n"
        "# TYPE cairn_step_duration_seconds histogram\n";
    for (const auto& [workflow, snap] : stats.step_seconds) {
        histogram(out, "cairn_step_duration_seconds",
                  fmt::format("workflow=\"{}\"", label(workflow)), snap);
    }
    out +=
        "# HELP cairn_step_retries_total Failed step attempts scheduled again, in this process.\n"
        "# TYPE cairn_step_retries_total counter\n";
    out += fmt::format("cairn_step_retries_total {}\n", stats.retries);
    out +=
        "# HELP cairn_executions_total Run executions (claims) in this process.\n"
        "# TYPE cairn_executions_total counter\n";
    out += fmt::format("cairn_executions_total {}\n", stats.executions);
    out +=
        "# HELP cairn_leases_lost_total Executions abandoned because another worker took the run "
        "over.\n"
        "# TYPE cairn_leases_lost_total counter\n";
    out += fmt::format("cairn_leases_lost_total {}\n", stats.leases_lost);

    std::lock_guard lock(mu_);
    out +=
        "# HELP cairn_http_requests_total HTTP requests by route, method and status.\n"
        "# TYPE cairn_http_requests_total counter\n";
    for (const auto& [key, n] : requests_) {
        const auto& [route, method, status] = key;
        out += fmt::format(
            "cairn_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{}\"}} {}\n",
            label(route), label(method), status, n);
    }
    out +=
        "# HELP cairn_http_request_duration_seconds HTTP request handling time.\n"
        "# TYPE cairn_http_request_duration_seconds histogram\n";
    histogram(out, "cairn_http_request_duration_seconds", "", http_seconds_.snapshot());
    return out;
}

}  // namespace cairn::server
