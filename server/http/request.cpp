#include "server/http/request.hpp"

#include <algorithm>
#include <cctype>

namespace cairn::server {

namespace {

int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    return std::tolower(static_cast<unsigned char>(c)) - 'a' + 10;
}

}  // namespace

std::string percent_decode(std::string_view in) {
    std::string out;
    out.reserve(in.size());
    for (std::size_t i = 0; i < in.size(); ++i) {
        if (in[i] == '+') {
            out.push_back(' ');
        } else if (in[i] == '%' && i + 2 < in.size() &&
                   std::isxdigit(static_cast<unsigned char>(in[i + 1])) &&
                   std::isxdigit(static_cast<unsigned char>(in[i + 2]))) {
            out.push_back(static_cast<char>(hex_value(in[i + 1]) * 16 + hex_value(in[i + 2])));
            i += 2;
        } else {
            out.push_back(in[i]);
        }
    }
    return out;
}

std::string_view Request::path() const {
    std::string_view t = target;
    return t.substr(0, t.find('?'));
}

std::string redact_target(std::string_view target) {
    static constexpr std::string_view kSecret[] = {
        "token", "access_token", "refresh_token", "key", "api_key", "password", "secret"};
    // An SDK's event key travels in the path: /e/{key}.
    if (target.starts_with("/e/") && target.size() > 3)
        return "/e/REDACTED" +
               redact_target(target.substr(std::min(target.find('?'), target.size())));
    const auto q = target.find('?');
    if (q == std::string_view::npos) return std::string(target);
    std::string out(target.substr(0, q + 1));
    std::string_view rest = target.substr(q + 1);
    bool first = true;
    while (true) {
        const auto amp = rest.find('&');
        const std::string_view pair = rest.substr(0, amp);
        if (!first) out.push_back('&');
        first = false;
        const auto eq = pair.find('=');
        std::string name = percent_decode(pair.substr(0, eq));
        for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        const bool secret =
            eq != std::string_view::npos &&
            std::find(std::begin(kSecret), std::end(kSecret), name) != std::end(kSecret);
        out.append(secret ? pair.substr(0, eq + 1) : pair);
        if (secret) out.append("REDACTED");
        if (amp == std::string_view::npos) break;
        rest = rest.substr(amp + 1);
    }
    return out;
}

std::optional<std::string> Request::query(std::string_view name) const {
    const auto q = target.find('?');
    if (q == std::string::npos) return std::nullopt;
    std::string_view rest = std::string_view(target).substr(q + 1);
    while (!rest.empty()) {
        const auto amp = rest.find('&');
        const std::string_view pair = rest.substr(0, amp);
        rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
        const auto eq = pair.find('=');
        if (percent_decode(pair.substr(0, eq)) == name) {
            return eq == std::string_view::npos ? std::string()
                                                : percent_decode(pair.substr(eq + 1));
        }
    }
    return std::nullopt;
}

std::string Request::header(std::string_view lower_name) const {
    auto it = headers.find(std::string(lower_name));
    return it == headers.end() ? std::string() : it->second;
}

}  // namespace cairn::server
