#include "server/client_address.hpp"

#include <fmt/format.h>

#include <boost/asio/ip/address.hpp>
#include <charconv>
#include <optional>
#include <stdexcept>

namespace cairn::server {
namespace {

namespace ip = boost::asio::ip;

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// An address as IPv6 bytes (IPv4 mapped); nullopt when it is not one.
std::optional<ip::address_v6> to_v6(std::string_view text) {
    boost::system::error_code ec;
    const auto a = ip::make_address(std::string(trim(text)), ec);
    if (ec) return std::nullopt;
    if (a.is_v4()) return ip::make_address_v6(ip::v4_mapped, a.to_v4());
    return a.to_v6();
}

bool matches(const std::array<std::uint8_t, 16>& a, const std::array<std::uint8_t, 16>& b,
             int prefix) {
    for (int i = 0; i < 16 && prefix > 0; ++i, prefix -= 8) {
        const int bits = prefix >= 8 ? 8 : prefix;
        const auto mask = static_cast<std::uint8_t>(0xFF << (8 - bits));
        if ((a[i] & mask) != (b[i] & mask)) return false;
    }
    return true;
}

std::string limit_key(const ip::address_v6& a) {
    if (a.is_v4_mapped()) return ip::make_address_v4(ip::v4_mapped, a).to_string();
    auto bytes = a.to_bytes();
    for (int i = 8; i < 16; ++i) bytes[i] = 0;
    return ip::address_v6(bytes).to_string() + "/64";
}

}  // namespace

TrustedProxies TrustedProxies::parse(std::string_view list) {
    TrustedProxies out;
    while (!list.empty()) {
        const auto comma = list.find(',');
        const std::string_view entry = trim(list.substr(0, comma));
        list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
        if (entry.empty()) continue;
        const auto slash = entry.find('/');
        const auto address = to_v6(entry.substr(0, slash));
        if (!address)
            throw std::invalid_argument(fmt::format("'{}' is not an IP address or network", entry));
        Net net;
        net.bytes = address->to_bytes();
        const int bits = address->is_v4_mapped() ? 32 : 128;
        int prefix = bits;
        if (slash != std::string_view::npos) {
            const auto digits = entry.substr(slash + 1);
            const auto [end, ec] =
                std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
            if (ec != std::errc{} || end != digits.data() + digits.size() || prefix < 0 ||
                prefix > bits)
                throw std::invalid_argument(
                    fmt::format("'{}': the prefix length must be 0 to {}", entry, bits));
        }
        net.prefix = prefix + (128 - bits);
        out.nets_.push_back(net);
    }
    return out;
}

bool TrustedProxies::contains(std::string_view address) const {
    const auto a = to_v6(address);
    if (!a) return false;
    const auto bytes = a->to_bytes();
    for (const Net& n : nets_)
        if (matches(bytes, n.bytes, n.prefix)) return true;
    return false;
}

std::string client_address(std::string_view peer, std::string_view forwarded_for,
                           const TrustedProxies& proxies) {
    std::string_view chosen = peer;
    if (!proxies.empty() && proxies.contains(peer)) {
        // Right to left: each trusted hop appended the address it received from.
        while (!forwarded_for.empty()) {
            const auto comma = forwarded_for.rfind(',');
            const std::string_view hop = trim(
                comma == std::string_view::npos ? forwarded_for : forwarded_for.substr(comma + 1));
            forwarded_for = comma == std::string_view::npos ? std::string_view{}
                                                            : forwarded_for.substr(0, comma);
            if (!to_v6(hop)) break;  // garbage: stop at the last address a proxy vouched for
            chosen = hop;
            if (!proxies.contains(hop)) break;
        }
    }
    const auto a = to_v6(chosen);
    return a ? limit_key(*a) : std::string(trim(chosen));
}

}  // namespace cairn::server
