#include "common/slots.hpp"

#include <doctest/doctest.h>

#include <utility>

TEST_CASE("slots allow `limit` holders per key and free a slot when a holder goes") {
    cairn::Slots slots(2);
    auto a = slots.acquire("u1");
    auto b = slots.acquire("u1");
    CHECK(a);
    CHECK(b);
    CHECK_FALSE(slots.acquire("u1"));
    CHECK(slots.acquire("u2"));  // another key has its own
    CHECK(slots.count("u1") == 2);
    {
        auto moved = std::move(a);  // a move hands the slot on; it is released once
        CHECK(slots.count("u1") == 2);
    }
    CHECK(slots.count("u1") == 1);
    auto c = slots.acquire("u1");
    CHECK(c);
    b = cairn::Slots::Hold();  // assigning over a hold releases it
    c = cairn::Slots::Hold();
    CHECK(slots.count("u1") == 0);
}
