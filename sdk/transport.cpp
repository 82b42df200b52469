#include "sdk/transport.hpp"

#include <curl/curl.h>
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <memory>

namespace cairn::sdk {

namespace {

struct Sink {
    HttpResponse* response;
    std::size_t max_body;
};

std::size_t on_body(char* data, std::size_t size, std::size_t n, void* user) {
    auto* sink = static_cast<Sink*>(user);
    if (sink->response->body.size() + size * n > sink->max_body) return 0;  // aborts
    sink->response->body.append(data, size * n);
    return size * n;
}

std::size_t on_header(char* data, std::size_t size, std::size_t n, void* user) {
    auto* response = static_cast<HttpResponse*>(user);
    const std::string_view line(data, size * n);
    const std::size_t colon = line.find(':');
    if (line.starts_with("HTTP/")) {
        response->headers.clear();  // a new response (after a redirect or a 100)
    } else if (colon != std::string_view::npos) {
        std::string name(line.substr(0, colon));
        for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        std::string_view value = line.substr(colon + 1);
        while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
            value.remove_prefix(1);
        while (!value.empty() &&
               (value.back() == '\r' || value.back() == '\n' || value.back() == ' '))
            value.remove_suffix(1);
        response->headers[name] = std::string(value);
    }
    return size * n;
}

}  // namespace

Transport::Transport(TransportOptions options) : options_(options) {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
    options_.connections = std::max<std::size_t>(options_.connections, 1);
}

Transport::~Transport() {
    for (void* h : idle_) curl_easy_cleanup(static_cast<CURL*>(h));
}

void* Transport::checkout() {
    std::unique_lock lock(mu_);
    freed_.wait(lock, [&] { return !idle_.empty() || made_ < options_.connections; });
    if (!idle_.empty()) {
        void* h = idle_.back();
        idle_.pop_back();
        return h;
    }
    CURL* h = curl_easy_init();
    if (h == nullptr) throw TransportError("libcurl: cannot create a handle");
    ++made_;
    return h;
}

void Transport::checkin(void* handle) {
    {
        std::lock_guard lock(mu_);
        idle_.push_back(handle);
    }
    freed_.notify_one();
}

HttpResponse Transport::request(std::string_view method, const std::string& url,
                                const std::vector<std::pair<std::string, std::string>>& headers,
                                const std::string& body) {
    CURL* h = static_cast<CURL*>(checkout());
    struct Return {
        Transport* t;
        CURL* h;
        ~Return() {
            curl_easy_reset(h);  // keeps the handle's connections
            t->checkin(h);
        }
    } give_back{this, h};
    curl_slist* list = nullptr;
    for (const auto& [name, value] : headers)
        list = curl_slist_append(list, fmt::format("{}: {}", name, value).c_str());
    list = curl_slist_append(list, "Expect:");  // no 100-continue round trip
    const std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> header_list(
        list, curl_slist_free_all);
    HttpResponse response;
    Sink sink{&response, options_.max_body};
    const std::string verb(method);
    curl_easy_setopt(h, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, verb.c_str());
    if (verb != "GET") {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.data());
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, header_list.get());
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(options_.timeout.count()));
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10'000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);  // timeouts without SIGALRM in threads
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &response);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "cairn");
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");  // gzip and the like, decoded
    const CURLcode rc = curl_easy_perform(h);
    if (rc == CURLE_WRITE_ERROR)
        throw TransportError(
            fmt::format("{} {}: the response is over {} bytes", verb, url, options_.max_body));
    if (rc != CURLE_OK)
        throw TransportError(fmt::format("{} {}: {}", verb, url, curl_easy_strerror(rc)));
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &response.status);
    return response;
}

}  // namespace cairn::sdk
