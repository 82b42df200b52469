#include "common/ids.hpp"

#include <doctest/doctest.h>

#include <set>
#include <string>

#include "common/time.hpp"

using namespace cairn;

TEST_CASE("new_id is a UUIDv7 in canonical form") {
    const std::string id = new_id();
    CHECK(is_uuid(id));
    CHECK(id[14] == '7');                                                       // version nibble
    CHECK((id[19] == '8' || id[19] == '9' || id[19] == 'a' || id[19] == 'b'));  // RFC variant
}

TEST_CASE("ids are strictly increasing within a process, also inside one millisecond") {
    std::string prev = new_id_at(1'700'000'000'000);
    std::set<std::string> seen{prev};
    for (int i = 0; i < 20'000; ++i) {
        // 20,000 ids in the same millisecond overflow the 12-bit counter several times.
        std::string next = new_id_at(1'700'000'000'000);
        REQUIRE(next > prev);
        prev = next;
        seen.insert(next);
    }
    CHECK(seen.size() == 20'001);
}

TEST_CASE("the timestamp is the first 48 bits") {
    const std::int64_t before = now_ms();
    std::string hex = new_id().substr(0, 13);
    hex.erase(8, 1);
    const std::int64_t ms = std::stoll(hex, nullptr, 16);
    CHECK(ms >= before);
    CHECK(ms <= now_ms());
}

TEST_CASE("an earlier timestamp never makes an earlier id") {
    const std::string late = new_id();
    CHECK(new_id_at(1) > late);
}

TEST_CASE("is_uuid rejects what is not a UUID") {
    CHECK_FALSE(is_uuid(""));
    CHECK_FALSE(is_uuid("not-a-uuid"));
    CHECK_FALSE(is_uuid("0123456789ab-cdef-0123-4567-89abcdef0123"));
    CHECK_FALSE(is_uuid("01234567-89ab-cdef-0123-456789abcdeg"));
    CHECK(is_uuid("01234567-89AB-cdef-0123-456789abcdef"));
}

TEST_CASE("format_rfc3339 prints UTC with milliseconds") {
    CHECK(format_rfc3339(0) == "1970-01-01T00:00:00.000Z");
    CHECK(format_rfc3339(1'790'000'123'456) == "2026-09-21T14:15:23.456Z");
    CHECK(format_rfc3339(951'782'400'000) == "2000-02-29T00:00:00.000Z");
}

TEST_CASE("id_floor divides the ids made before a time from those made at or after it") {
    const std::string id = cairn::new_id();
    // The id's own millisecond, read back from its first 48 bits.
    const std::int64_t t = std::stoll(id.substr(0, 8) + id.substr(9, 4), nullptr, 16);
    CHECK(cairn::id_floor(t) == id.substr(0, 14));
    CHECK(cairn::id_floor(t) < id);
    CHECK(id < cairn::id_floor(t + 1));
    CHECK(cairn::id_floor(t - 1) < cairn::id_floor(t));
}
