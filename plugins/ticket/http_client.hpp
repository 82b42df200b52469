#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace cairn::ticket {

struct HttpReply {
    long status = 0;
    std::string body;
    std::optional<long> retry_after_s;  // a Retry-After header in seconds, if sent
};

// POSTs `body` as application/json with libcurl and returns the reply. Throws
// std::runtime_error when no HTTP reply arrives (refused, reset, DNS, timeout after
// `timeout`). Thread-safe.
HttpReply post_json(const std::string& url,
                    const std::vector<std::pair<std::string, std::string>>& headers,
                    const std::string& body, std::chrono::milliseconds timeout);

// curl_global_init once per process; every libcurl user calls this first.
void init_curl();

}  // namespace cairn::ticket
