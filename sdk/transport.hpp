#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cairn::sdk {

// No HTTP reply came: refused, reset, DNS, TLS (a certificate that does not verify),
// timeout, or a body over the size limit.
class TransportError : public std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct HttpResponse {
    long status = 0;
    std::string body;
    std::map<std::string, std::string> headers;  // names lower-cased; the last of a name
    std::string header(const std::string& lower_name) const {
        const auto it = headers.find(lower_name);
        return it == headers.end() ? std::string() : it->second;
    }
};

struct TransportOptions {
    std::chrono::milliseconds timeout{std::chrono::minutes(5)};  // per request
    std::size_t max_body = std::size_t{8} * 1024 * 1024;         // bytes of a response
    std::size_t connections = 32;  // handles (each with its kept-alive connections)
};

// HTTP(S) requests with libcurl, on a bounded pool of handles: each keeps its connections
// alive between requests, and a caller waits when every handle is in use. Certificates of
// https:// URLs are verified. Thread-safe.
class Transport {
  public:
    explicit Transport(TransportOptions options = {});
    ~Transport();
    Transport(const Transport&) = delete;
    Transport& operator=(const Transport&) = delete;

    // Throws TransportError when no complete reply arrives.
    HttpResponse request(std::string_view method, const std::string& url,
                         const std::vector<std::pair<std::string, std::string>>& headers,
                         const std::string& body);

  private:
    void* checkout();
    void checkin(void* handle);

    TransportOptions options_;
    std::mutex mu_;
    std::condition_variable freed_;
    std::vector<void*> idle_;  // guarded by mu_
    std::size_t made_ = 0;     // guarded by mu_
};

}  // namespace cairn::sdk
