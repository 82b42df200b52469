#pragma once

// What the run store suites share: a migrated database on the backend under test
// (CAIRN_TEST_BACKEND) with a RunStore over it, and a fixed "now" (the store never reads
// the clock).

#include <doctest/doctest.h>
#include <fmt/format.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "storage/migrations.hpp"
#include "storage/run_store.hpp"
#include "support/test_db.hpp"

namespace cairn::run_store_test {

using namespace cairn::storage;
using cairn::testing::TestDb;

inline constexpr std::int64_t kT0 =
    1'800'000'000'000;  // a fixed "now"; the store never reads the clock
inline constexpr std::int64_t kLease = 30'000;

// A migrated database with a RunStore over it.
struct Fixture {
    TestDb t;
    RunStore store{t.db()};
    Fixture() { Migrator(t.db(), {run_store_component()}).apply(); }

    std::vector<std::string> send(std::string name, int nruns, std::int64_t now = kT0) {
        std::vector<NewRun> runs;
        for (int i = 0; i < nruns; ++i) runs.push_back({fmt::format("wf-{}", i), "v1"});
        return store.insert_event(NewEvent{std::move(name), R"({"k":1})"}, runs, now).run_ids;
    }
};

inline NewEvent event(std::string name, std::string data = "{}") {
    NewEvent e;
    e.name = std::move(name);
    e.data = std::move(data);
    return e;
}

inline std::int64_t count(Database& db, std::string_view table) {
    return db.exec(fmt::format("SELECT count(*) FROM {}", table)).front().get<std::int64_t>(0);
}

inline StepRecord step(const Lease& lease, std::string key, std::int64_t seq, std::string output) {
    return StepRecord{
        lease.run_id, std::move(key), seq, "completed", std::move(output), std::nullopt, 1,
        kT0,          kT0 + 1};
}

// `w` written by write_runs on its own (a batch of one, committed alone); returns it with
// `held` and `run_status` set.
inline RunWrite write_alone(RunStore& store, RunWrite w) {
    RunWrite* const one[] = {&w};
    store.write_runs(one);
    return w;
}

}  // namespace cairn::run_store_test
