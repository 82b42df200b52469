#include "plugins/ticket/http_client.hpp"

#include <curl/curl.h>
#include <fmt/format.h>

#include <memory>
#include <mutex>
#include <stdexcept>

namespace cairn::ticket {

void init_curl() {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

namespace {

std::size_t on_body(char* data, std::size_t size, std::size_t n, void* user) {
    auto* out = static_cast<std::string*>(user);
    constexpr std::size_t kMax = 8 * 1024 * 1024;  // a model's answer is far smaller
    if (out->size() + size * n > kMax) return 0;   // aborts the transfer
    out->append(data, size * n);
    return size * n;
}

std::size_t on_header(char* data, std::size_t size, std::size_t n, void* user) {
    auto* reply = static_cast<HttpReply*>(user);
    std::string_view line(data, size * n);
    constexpr std::string_view kName = "retry-after:";
    if (line.size() > kName.size()) {
        std::string head(line.substr(0, kName.size()));
        for (char& c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (head == kName) {
            try {
                reply->retry_after_s = std::stol(std::string(line.substr(kName.size())));
            } catch (const std::exception&) {
                // An HTTP date instead of seconds: the caller's default applies.
            }
        }
    }
    return size * n;
}

}  // namespace

HttpReply post_json(const std::string& url,
                    const std::vector<std::pair<std::string, std::string>>& headers,
                    const std::string& body, std::chrono::milliseconds timeout) {
    init_curl();
    std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
    if (!curl) throw std::runtime_error("libcurl: cannot create a handle");
    curl_slist* list = curl_slist_append(nullptr, "Content-Type: application/json");
    for (const auto& [name, value] : headers)
        list = curl_slist_append(list, fmt::format("{}: {}", name, value).c_str());
    std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> header_list(list,
                                                                            curl_slist_free_all);
    HttpReply reply;
    CURL* h = curl.get();
    curl_easy_setopt(h, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, header_list.get());
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(std::min<std::int64_t>(timeout.count(), 10'000)));
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);  // timeouts without SIGALRM in threads
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &reply.body);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &reply);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "cairn");
    const CURLcode rc = curl_easy_perform(h);
    if (rc != CURLE_OK) {
        throw std::runtime_error(fmt::format("POST {}: {}", url, curl_easy_strerror(rc)));
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &reply.status);
    return reply;
}

}  // namespace cairn::ticket
