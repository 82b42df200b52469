#pragma once

// What the engine suites share: a fresh database with the engine's schema on the backend
// under test (CAIRN_TEST_BACKEND), a ManualClock that tests move instead of sleeping, and
// run_until_idle() to execute whatever is due.

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>

#include "engine/engine.hpp"
#include "storage/migrations.hpp"
#include "support/test_db.hpp"

namespace cairn::engine_test {

using namespace std::chrono_literals;
using cairn::testing::TestDb;
using engine::Engine;
using engine::EventInput;
using engine::ManualClock;

inline constexpr std::int64_t kT0 = 1'900'000'000'000;

inline RetryPolicy exact(int attempts, std::chrono::milliseconds initial = 1000ms) {
    RetryPolicy p;
    p.max_attempts = attempts;
    p.initial_delay = initial;
    p.multiplier = 2.0;
    p.max_delay = 60s;
    p.jitter = false;
    return p;
}

struct Fixture {
    TestDb t;
    ManualClock clock{kT0};
    Engine engine{t.db(), clock};
    Fixture() { storage::Migrator(t.db(), {storage::run_store_component()}).apply(); }

    std::string start(const std::string& event, json data = json::object()) {
        auto r = engine.send(EventInput{event, std::move(data)});
        REQUIRE(r.run_ids.size() == 1);
        return r.run_ids[0];
    }
    int idle() { return engine.run_until_idle(); }
    storage::RunRecord run(const std::string& id) { return *engine.store().get_run(id); }
    std::map<std::string, storage::StepRecord> steps(const std::string& id) {
        std::map<std::string, storage::StepRecord> out;
        for (auto& s : engine.store().steps(id)) out[s.key] = s;
        return out;
    }
    std::int64_t count(const std::string& sql) {
        return t.db().exec(sql).front().get<std::int64_t>(0);
    }
};

// The notes table and the "noted" workflow the tests of sends in a transaction share.
inline void add_notes(Fixture& f) {
    f.t.db().transact([](storage::Transaction& tx) {
        tx.exec_script("CREATE TABLE notes (id TEXT PRIMARY KEY, run_id TEXT)");
    });
    f.engine.add(workflow("noted").on_event("note/added").run([](Context&) { return 1; }));
}

// The caller's check before writing: a note is to be written only if absent.
struct NoteTaken : std::runtime_error {
    NoteTaken() : std::runtime_error("the note exists") {}
};

// Sends `in` in a transaction that also writes note `id` naming the event's first run
// (unless the send is a repeat); with `only_if_absent`, throws NoteTaken first when the
// note exists, writing nothing.
inline engine::SendResult send_noted(storage::Database& db, Engine& e, const EventInput& in,
                                     const std::string& id, bool only_if_absent = false) {
    return db.transact([&](storage::Transaction& tx) {
        if (only_if_absent && !tx.exec("SELECT 1 FROM notes WHERE id = $1", id).empty())
            throw NoteTaken();
        auto sent = e.send(tx, in);
        if (!sent.duplicate)
            tx.exec("INSERT INTO notes (id, run_id) VALUES ($1, $2)", id, sent.run_ids.at(0));
        return sent;
    });
}

}  // namespace cairn::engine_test
