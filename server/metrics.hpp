#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <tuple>
#include <utility>

#include "common/histogram.hpp"
#include "storage/flow_store.hpp"

namespace cairn::storage {
class RunStore;
}
namespace cairn::engine {
struct EngineStats;
}

namespace cairn::server {

// Prometheus metrics: HTTP requests counted here, the engine's own counters and step
// histograms, and gauges read from the database at scrape time. Thread-safe.
class Metrics {
  public:
    // `key` empty: /metrics is open. Otherwise a scrape must send `Authorization: Bearer
    // <key>` (CAIRN_METRICS_KEY).
    explicit Metrics(std::string key = {}) : key_(std::move(key)) {}
    // Whether a request with this Authorization header may scrape.
    bool authorized(const std::string& authorization) const;

    // `route` must be a route pattern or "unmatched" (a fixed set); `method` may be any
    // token a client sent: methods HTTP does not define are counted as "other".
    void observe_http(const std::string& route, const std::string& method, int status,
                      double seconds);
    // The text exposition format (version 0.0.4).
    std::string render(storage::RunStore& store, const engine::EngineStats& stats,
                       std::span<const storage::QueueDepth> depths, std::int64_t now) const;

  private:
    std::string key_;
    mutable std::mutex mu_;
    std::map<std::tuple<std::string, std::string, int>, std::uint64_t> requests_;  // guarded by mu_
    Histogram http_seconds_;
};

}  // namespace cairn::server
