#include "sdk/signing.hpp"

#include <fmt/format.h>
#include <sodium.h>

#include <array>
#include <cctype>
#include <charconv>
#include <stdexcept>
#include <vector>

namespace cairn::sdk {

namespace {

bool is_hex(char c) {
    return std::isxdigit(static_cast<unsigned char>(c)) != 0;
}
bool is_word(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_';
}

// The length of a "signkey-<env>-" prefix at the start of `s`, or 0.
std::size_t prefix_length(std::string_view s) {
    constexpr std::string_view kStart = "signkey-";
    if (!s.starts_with(kStart)) return 0;
    std::size_t i = kStart.size();
    const std::size_t env = i;
    while (i < s.size() && is_word(s[i])) ++i;
    if (i == env || i >= s.size() || s[i] != '-') return 0;
    return i + 1;
}

std::string to_hex(const unsigned char* data, std::size_t n) {
    std::string out(n * 2 + 1, '\0');
    sodium_bin2hex(out.data(), out.size(), data, n);
    out.pop_back();
    return out;
}

bool same(std::string_view a, std::string_view b) {
    return a.size() == b.size() && sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace

std::optional<SigningKey> SigningKey::parse(std::string_view text) {
    const std::size_t p = prefix_length(text);
    if (p == 0) return std::nullopt;
    const std::string_view hex = text.substr(p);
    if (hex.empty() || hex.size() % 2 != 0) return std::nullopt;
    for (char c : hex) {
        if (!is_hex(c)) return std::nullopt;
    }
    if (sodium_init() < 0) throw std::runtime_error("libsodium failed to initialise");
    SigningKey k;
    k.prefix_ = std::string(text.substr(0, p));
    k.hex_ = std::string(hex);
    return k;
}

std::string SigningKey::bearer() const {
    std::vector<unsigned char> bytes(hex_.size() / 2);
    std::size_t n = 0;
    sodium_hex2bin(bytes.data(), bytes.size(), hex_.data(), hex_.size(), nullptr, &n, nullptr);
    std::array<unsigned char, crypto_hash_sha256_BYTES> digest{};
    crypto_hash_sha256(digest.data(), bytes.data(), n);
    return prefix_ + to_hex(digest.data(), digest.size());
}

bool SigningKey::accepts_bearer(std::string_view authorization) const {
    if (authorization.size() < 7) return false;
    std::string scheme(authorization.substr(0, 7));
    for (char& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (scheme != "bearer ") return false;
    std::string_view token = authorization.substr(7);
    token.remove_prefix(prefix_length(token));
    const std::string hashed = bearer().substr(prefix_.size());
    return same(token, hashed) || same(token, hex_);
}

std::string SigningKey::sign(std::string_view body, std::int64_t unix_s) const {
    const std::string t = std::to_string(unix_s);
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, reinterpret_cast<const unsigned char*>(hex_.data()),
                                hex_.size());
    crypto_auth_hmacsha256_update(&st, reinterpret_cast<const unsigned char*>(body.data()),
                                  body.size());
    crypto_auth_hmacsha256_update(&st, reinterpret_cast<const unsigned char*>(t.data()), t.size());
    std::array<unsigned char, crypto_auth_hmacsha256_BYTES> mac{};
    crypto_auth_hmacsha256_final(&st, mac.data());
    return fmt::format("t={}&s={}", t, to_hex(mac.data(), mac.size()));
}

bool SigningKey::verify(std::string_view header, std::string_view body, std::int64_t now_s,
                        std::int64_t max_skew_s) const {
    std::optional<std::int64_t> t;
    std::string_view s;
    while (!header.empty()) {
        const std::size_t amp = header.find('&');
        const std::string_view part = header.substr(0, amp);
        header = amp == std::string_view::npos ? std::string_view() : header.substr(amp + 1);
        if (part.starts_with("t=")) {
            std::int64_t v = 0;
            const auto [end, ec] = std::from_chars(part.data() + 2, part.data() + part.size(), v);
            if (ec == std::errc{} && end == part.data() + part.size()) t = v;
        } else if (part.starts_with("s=")) {
            s = part.substr(2);
        }
    }
    if (!t || s.empty()) return false;
    // SDKs sign requests with seconds and (some versions) responses with milliseconds.
    const std::int64_t t_s = *t > 100'000'000'000 ? *t / 1000 : *t;
    if (t_s < now_s - max_skew_s || t_s > now_s + max_skew_s) return false;
    const std::string expected = sign(body, *t);
    return same(std::string_view(expected).substr(expected.find("&s=") + 3), s);
}

std::string redact_signing_keys(std::string_view line) {
    std::string out;
    std::size_t i = 0;
    while (i < line.size()) {
        const std::size_t at = line.find("signkey-", i);
        if (at == std::string_view::npos) break;
        const std::size_t p = prefix_length(line.substr(at));
        std::size_t end = at + p;
        while (p != 0 && end < line.size() && is_word(line[end])) ++end;
        out.append(line.substr(i, at - i));
        if (p == 0) {
            out += "signkey-";
            i = at + 8;
            continue;
        }
        out.append(line.substr(at, p));
        out += "REDACTED";
        i = end;
    }
    out.append(line.substr(std::min(i, line.size())));
    return out;
}

}  // namespace cairn::sdk
