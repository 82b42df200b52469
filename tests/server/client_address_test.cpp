#include "server/client_address.hpp"

#include <doctest/doctest.h>

#include <stdexcept>

using cairn::server::client_address;
using cairn::server::TrustedProxies;

TEST_CASE("without trusted proxies the peer is the client, whatever X-Forwarded-For says") {
    const TrustedProxies none;
    CHECK(client_address("203.0.113.7", "198.51.100.1", none) == "203.0.113.7");
    CHECK(client_address("::ffff:203.0.113.7", "", none) == "203.0.113.7");
}

TEST_CASE("IPv6 clients count as their /64") {
    const TrustedProxies none;
    CHECK(client_address("2001:db8:1:2:aaaa::1", "", none) == "2001:db8:1:2::/64");
    CHECK(client_address("2001:db8:1:2:bbbb::9", "", none) == "2001:db8:1:2::/64");
    CHECK(client_address("2001:db8:1:3::1", "", none) == "2001:db8:1:3::/64");
}

TEST_CASE("behind trusted proxies the rightmost untrusted forwarded address is the client") {
    const auto proxies = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1,::1");
    CHECK(proxies.contains("10.1.2.3"));
    CHECK(proxies.contains("::ffff:10.1.2.3"));
    CHECK(proxies.contains("::1"));
    CHECK_FALSE(proxies.contains("11.0.0.1"));
    // The client prepends what it likes; the proxy appends the address it saw.
    CHECK(client_address("127.0.0.1", "1.1.1.1, 203.0.113.7", proxies) == "203.0.113.7");
    CHECK(client_address("127.0.0.1", "203.0.113.7, 10.0.0.5", proxies) == "203.0.113.7");
    CHECK(client_address("127.0.0.1", "", proxies) == "127.0.0.1");
    CHECK(client_address("127.0.0.1", "garbage", proxies) == "127.0.0.1");
    // A peer that is not a proxy cannot choose its address.
    CHECK(client_address("198.51.100.4", "203.0.113.7", proxies) == "198.51.100.4");
}

TEST_CASE("trusted proxy lists are checked") {
    CHECK(TrustedProxies::parse("").empty());
    CHECK_THROWS_AS(TrustedProxies::parse("10.0.0.0/33"), std::invalid_argument);
    CHECK_THROWS_AS(TrustedProxies::parse("proxy.example"), std::invalid_argument);
    CHECK_THROWS_AS(TrustedProxies::parse("::/129"), std::invalid_argument);
    CHECK(TrustedProxies::parse("2001:db8::/32").contains("2001:db8:ffff::1"));
}
