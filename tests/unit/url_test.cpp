#include <doctest/doctest.h>

#include "storage/database.hpp"

using namespace cairn::storage;

TEST_CASE("SQLite URLs") {
    auto rel = parse_database_url("sqlite://data/cairn.db");
    CHECK(rel.backend == Backend::sqlite);
    CHECK(rel.path == "data/cairn.db");
    CHECK(rel.synchronous == "NORMAL");

    auto abs = parse_database_url(
        "sqlite:///var/lib/cairn.db?synchronous=full&busy_timeout_ms=100&pool=2");
    CHECK(abs.path == "/var/lib/cairn.db");
    CHECK(abs.synchronous == "FULL");
    CHECK(abs.busy_timeout_ms == 100);
    CHECK(abs.pool_size == 2);

    auto mem = parse_database_url("sqlite::memory:");
    CHECK(mem.path == ":memory:");
}

TEST_CASE("Postgres URLs keep libpq options and hide the password") {
    auto u = parse_database_url("postgres://app:s3cret@db.local:5433/cairn?pool=3&sslmode=disable");
    CHECK(u.backend == Backend::postgres);
    CHECK(u.pool_size == 3);
    CHECK(u.path == "postgres://app:s3cret@db.local:5433/cairn?sslmode=disable");
    CHECK(u.redacted == "postgres://app:***@db.local:5433/cairn?sslmode=disable");
    CHECK(u.redacted.find("s3cret") == std::string::npos);

    CHECK(u.idle_tx_timeout_ms == 60'000);
    CHECK(parse_database_url("postgres://h/db?idle_tx_timeout_ms=1500").idle_tx_timeout_ms == 1500);
    CHECK_THROWS_AS(parse_database_url("postgres://h/db?idle_tx_timeout_ms=0"), ConfigError);

    CHECK(u.random_page_cost == "1.1");
    CHECK(parse_database_url("postgres://h/db?random_page_cost=4").random_page_cost == "4");
    CHECK(parse_database_url("postgres://h/db?random_page_cost=1.5").path == "postgres://h/db");
    for (const char* bad : {"0", "-1", "abc", "1.1;DROP", "", "2000", "nan"}) {
        CAPTURE(bad);
        CHECK_THROWS_AS(parse_database_url(std::string("postgres://h/db?random_page_cost=") + bad),
                        ConfigError);
    }

    auto plain = parse_database_url("postgresql://localhost/cairn");
    CHECK(plain.backend == Backend::postgres);
    CHECK(plain.pool_size == 8);
}

TEST_CASE("malformed URLs are ConfigErrors with a message naming the problem") {
    CHECK_THROWS_AS(parse_database_url(""), ConfigError);
    CHECK_THROWS_AS(parse_database_url("mysql://x/y"), ConfigError);
    CHECK_THROWS_AS(parse_database_url("sqlite://"), ConfigError);
    CHECK_THROWS_AS(parse_database_url("sqlite:/x.db"), ConfigError);
    CHECK_THROWS_AS(parse_database_url("postgres://"), ConfigError);
    CHECK_THROWS_AS(parse_database_url("postgres:///db"), ConfigError);
    CHECK_THROWS_AS(parse_database_url("sqlite://x.db?pool=0"), ConfigError);
    CHECK_THROWS_AS(parse_database_url("sqlite://x.db?pool=abc"), ConfigError);
    CHECK_THROWS_AS(parse_database_url("sqlite://x.db?synchronous=off"), ConfigError);
    CHECK_THROWS_AS(parse_database_url("sqlite://x.db?journal=delete"), ConfigError);
    CHECK_THROWS_AS(parse_database_url("sqlite://x.db?pool"), ConfigError);
    try {
        parse_database_url("redis://localhost");
        FAIL("expected ConfigError");
    } catch (const ConfigError& e) {
        CHECK(std::string(e.what()).find("redis://localhost") != std::string::npos);
        CHECK(std::string(e.what()).find("sqlite://") != std::string::npos);
    }
}

TEST_CASE("opening an unopenable SQLite path is a ConnectionError and creates nothing") {
    CHECK_THROWS_AS(Database::open("sqlite:///nonexistent-dir-for-cairn/x.db"), ConnectionError);
}

TEST_CASE(
    "an unreachable Postgres server is a ConnectionError naming the server, not the password") {
    try {
        Database::open("postgres://u:topsecret@127.0.0.1:1/db?connect_timeout=2");
        FAIL("expected ConnectionError");
    } catch (const ConnectionError& e) {
        const std::string what = e.what();
        CHECK(what.find("postgres") != std::string::npos);
        CHECK(what.find("127.0.0.1") != std::string::npos);
        CHECK(what.find("topsecret") == std::string::npos);
    }
}
