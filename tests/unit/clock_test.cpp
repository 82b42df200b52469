#include "engine/clock.hpp"

#include <doctest/doctest.h>

#include "common/time.hpp"

using namespace cairn::engine;

TEST_CASE("ManualClock moves only when told") {
    ManualClock clock(1000);
    CHECK(clock.now_ms() == 1000);
    clock.advance(250);
    CHECK(clock.now_ms() == 1250);
    clock.set(5);
    CHECK(clock.now_ms() == 5);
}

TEST_CASE("SystemClock follows the wall clock") {
    SystemClock clock;
    const auto before = cairn::now_ms();
    const auto t = clock.now_ms();
    CHECK(t >= before);
    CHECK(t - before < 1000);
}
