#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace cairn::server {

// The peers whose X-Forwarded-For header is believed: addresses and networks, as in
// "10.0.0.0/8, 127.0.0.1, ::1". Empty: no peer is a proxy.
class TrustedProxies {
  public:
    TrustedProxies() = default;
    // Throws std::invalid_argument naming the first entry that is not an address or network.
    static TrustedProxies parse(std::string_view list);
    bool contains(std::string_view address) const;
    bool empty() const { return nets_.empty(); }

  private:
    struct Net {
        std::array<std::uint8_t, 16> bytes{};  // IPv4 as IPv4-mapped IPv6
        int prefix = 128;                      // bits of `bytes` that must match
    };
    std::vector<Net> nets_;
};

// The address that limits key on for a request from `peer`: the peer itself; or, when the
// peer is a trusted proxy, the rightmost X-Forwarded-For entry that is not a trusted proxy
// (entries to its left are the client's to invent). An IPv6 address counts as its /64 —
// one host commonly holds a whole /64 — written "2001:db8:1:2::/64"; an IPv4-mapped IPv6
// address as the IPv4 address.
std::string client_address(std::string_view peer, std::string_view forwarded_for,
                           const TrustedProxies& proxies);

}  // namespace cairn::server
