// Sending events on SQLite and Postgres: in the caller's transaction, on their own, at
// once from many threads, and what each send writes, claims and wakes.
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sched.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <latch>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "engine/fixture.hpp"

using namespace cairn;
using namespace cairn::engine_test;
TEST_CASE("a repeated event id or idempotency key starts nothing new") {
    Fixture f;
    f.engine.add(workflow("once").on_event("go").run([](Context&) { return 1; }));
    EventInput e{"go"};
    e.idempotency_key = "order-17";
    auto first = f.engine.send(e);
    auto again = f.engine.send(e);
    CHECK(again.duplicate);
    CHECK(again.run_ids == first.run_ids);
    CHECK(f.count("SELECT count(*) FROM runs") == 1);
}

TEST_CASE("a send in the caller's transaction commits with its rows, on every path") {
    Fixture f;
    add_notes(f);
    f.engine.add(workflow("approval").on_event("ticket/created").run([](Context& ctx) {
        return ctx.wait_for_event("approved", "note/added", "data.ticket", 1h).has_value();
    }));
    auto note_run = [&](const std::string& id) {
        auto r = f.t.db().exec("SELECT run_id FROM notes WHERE id = $1", id);
        return r.empty() ? std::string() : r.front().get<std::string>(0);
    };
    storage::Database& db = f.t.db();

    // A plain event.
    auto a = send_noted(db, f.engine, EventInput{"note/added", {{"ticket", 1}}}, "a");
    REQUIRE(a.run_ids.size() == 1);
    CHECK(note_run("a") == a.run_ids[0]);
    CHECK(f.idle() == 1);
    CHECK(f.run(a.run_ids[0]).status == "completed");

    // An event a run waits for: resumed in the same commit as the note.
    const auto waiting = f.start("ticket/created", {{"ticket", 2}});
    f.idle();
    REQUIRE(f.run(waiting).status == "waiting");
    auto b = send_noted(db, f.engine, EventInput{"note/added", {{"ticket", 2}}}, "b");
    CHECK(b.waits_resumed == 1);
    CHECK(note_run("b") == b.run_ids.at(0));
    CHECK(f.idle() == 2);
    CHECK(f.run(waiting).status == "completed");

    // A repeat: the caller sees the first delivery's runs.
    EventInput keyed{"note/added", {{"ticket", 3}}};
    keyed.idempotency_key = "note-3";
    auto c = send_noted(db, f.engine, keyed, "c");
    auto again = send_noted(db, f.engine, keyed, "c-again");
    CHECK(again.duplicate);
    CHECK(again.run_ids == c.run_ids);
    CHECK(note_run("c-again").empty());

    // A row that cannot be inserted: neither it nor the event is written.
    const auto events = f.count("SELECT count(*) FROM events");
    CHECK_THROWS_AS(send_noted(db, f.engine, EventInput{"note/added", {{"ticket", 4}}}, "a"),
                    storage::UniqueViolation);
    CHECK(f.count("SELECT count(*) FROM events") == events);
    CHECK(f.count("SELECT count(*) FROM notes") == 3);
    f.idle();

    // The caller's own check refuses the write: nothing is written, for a plain event and
    // for one a run waits for alike, and the waiting run stays waiting.
    const auto waits = f.start("ticket/created", {{"ticket", 6}});
    f.idle();
    REQUIRE(f.run(waits).status == "waiting");
    const auto before = f.count("SELECT count(*) FROM events");
    CHECK_THROWS_AS(send_noted(db, f.engine, EventInput{"note/added", {{"ticket", 5}}}, "a", true),
                    NoteTaken);
    CHECK_THROWS_AS(send_noted(db, f.engine, EventInput{"note/added", {{"ticket", 6}}}, "b", true),
                    NoteTaken);
    CHECK(f.count("SELECT count(*) FROM events") == before);
    CHECK(f.idle() == 0);
    CHECK(f.run(waits).status == "waiting");
    auto e = send_noted(db, f.engine, EventInput{"note/added", {{"ticket", 6}}}, "e", true);
    CHECK(e.waits_resumed == 1);
    CHECK(note_run("e") == e.run_ids.at(0));
    CHECK(f.idle() == 2);
    CHECK(f.run(waits).status == "completed");

    // Several events in one transaction: one result each, in order; a repeat among them
    // names the first delivery, an awaited one resumes its run.
    const auto waits2 = f.start("ticket/created", {{"ticket", 8}});
    f.idle();
    std::vector<EventInput> several{EventInput{"note/added", {{"ticket", 7}}},
                                    EventInput{"note/added", {{"ticket", 8}}}, keyed,
                                    EventInput{"other/name"}};
    const auto sent =
        db.transact([&](storage::Transaction& tx) { return f.engine.send(tx, several); });
    REQUIRE(sent.size() == 4);
    CHECK(sent[0].run_ids.size() == 1);
    CHECK_FALSE(sent[0].duplicate);
    CHECK(sent[1].waits_resumed == 1);
    CHECK(sent[2].duplicate);
    CHECK(sent[2].run_ids == c.run_ids);
    CHECK(sent[3].run_ids.empty());
    CHECK(f.engine.store().get_event(sent[3].event_id)->name == "other/name");
    CHECK(f.idle() == 3);
    CHECK(f.run(waits2).status == "completed");
}

TEST_CASE("sends in transactions while workers run: each lands with its rows, or fails alone") {
    TestDb t;
    storage::Migrator(t.db(), {storage::run_store_component()}).apply();
    t.db().transact([](storage::Transaction& tx) {
        tx.exec_script("CREATE TABLE notes (id TEXT PRIMARY KEY, run_id TEXT)");
    });
    engine::SystemClock clock;
    Engine e(t.db(), clock);
    e.add(workflow("noted").on_event("note/added").run([](Context& ctx) {
        ctx.step("a", [] { return 1; });
        return ctx.step("b", [] { return 2; });
    }));
    auto count = [&](const std::string& sql) {
        return t.db().exec(sql).front().get<std::int64_t>(0);
    };
    // On SQLite these transactions share the commits of the runs' step records (the
    // database's WriteBatcher); a transaction that fails must fail alone and reach its own
    // caller as thrown. The runs are handed to this process's idle workers or queued.
    e.start({.threads = 4, .lease = 5s, .poll = 20ms});
    constexpr int kSenders = 8, kEach = 25;
    std::atomic<int> refused{0}, unmet{0};
    std::vector<std::thread> senders;
    for (int s = 0; s < kSenders; ++s) {
        senders.emplace_back([&, s] {
            for (int i = 0; i < kEach; ++i) {
                const std::string id = "n-" + std::to_string(s) + "-" + std::to_string(i);
                send_noted(t.db(), e, EventInput{"note/added", {{"id", id}}}, id, true);
                try {  // the same note id again, on the caller's check: not sent
                    send_noted(t.db(), e, EventInput{"note/added", {{"again", id}}}, id, true);
                } catch (const NoteTaken&) {
                    ++unmet;
                }
                try {  // the same note id again: refused, with its event
                    send_noted(t.db(), e, EventInput{"note/added", {{"again", id}}}, id);
                } catch (const storage::UniqueViolation&) {
                    ++refused;
                }
            }
        });
    }
    for (auto& th : senders) th.join();
    constexpr int kRuns = kSenders * kEach;
    for (int i = 0;
         i < 400 && count("SELECT count(*) FROM runs WHERE status = 'completed'") < kRuns; ++i)
        std::this_thread::sleep_for(25ms);
    e.stop();
    CHECK(unmet == kRuns);
    CHECK(refused == kRuns);
    CHECK(count("SELECT count(*) FROM events") == kRuns);
    CHECK(count("SELECT count(*) FROM notes") == kRuns);
    // Each note names the run of its own event: no rows crossed between shared commits.
    CHECK(count("SELECT count(*) FROM notes n JOIN runs r ON r.id = n.run_id "
                "JOIN events ev ON ev.id = r.event_id "
                "WHERE ev.data LIKE '%\"' || n.id || '\"%'") == kRuns);
    CHECK(count("SELECT count(*) FROM runs WHERE status = 'completed'") == kRuns);
    CHECK(count("SELECT count(*) FROM steps") == 2 * kRuns);
    if (t.db().backend() == storage::Backend::sqlite) {
        const auto stats = t.db().writes().stats();
        CHECK(stats.shared_writes > stats.shared_batches);  // some commits were shared
    }
}

TEST_CASE("plain sends while workers run: each lands once, repeats and awaited events too") {
    TestDb t;
    storage::Migrator(t.db(), {storage::run_store_component()}).apply();
    engine::SystemClock clock;
    Engine e(t.db(), clock);
    e.add(workflow("counted").on_event("item/added").run([](Context& ctx) {
        return ctx.step("a", [] { return 1; });
    }));
    e.add(workflow("approval").on_event("order/placed").run([](Context& ctx) {
        return ctx.wait_for_event("paid", "order/paid", "data.order", 1h).has_value();
    }));
    auto count = [&](const std::string& sql) {
        return t.db().exec(sql).front().get<std::int64_t>(0);
    };
    auto wait_until = [&](const std::string& sql, std::int64_t n) {
        for (int i = 0; i < 400 && count(sql) < n; ++i) std::this_thread::sleep_for(25ms);
        return count(sql);
    };
    // On Postgres concurrent sends share one statement (the WriteBatcher's batches); an
    // event that statement leaves out, a repeat or one a run waits for, is written on its
    // own in a transaction, and the caller cannot tell the two apart.
    e.start({.threads = 4, .lease = 5s, .poll = 20ms});
    const auto order = e.send(EventInput{"order/placed", {{"order", 7}}});
    REQUIRE(order.run_ids.size() == 1);
    REQUIRE(wait_until("SELECT count(*) FROM waits", 1) == 1);

    constexpr int kSenders = 4, kEach = 30;
    std::mutex mu;
    std::map<std::string, std::vector<engine::SendResult>> by_key;  // guarded by mu
    std::vector<std::thread> senders;
    for (int s = 0; s < kSenders; ++s) {
        senders.emplace_back([&, s] {
            for (int i = 0; i < kEach; ++i) {
                EventInput in{"item/added", {{"s", s}, {"i", i}}};
                in.idempotency_key = "item-" + std::to_string(i);  // every sender repeats it
                auto sent = e.send(in);
                std::lock_guard lock(mu);
                by_key[*in.idempotency_key].push_back(std::move(sent));
            }
        });
    }
    const auto paid = e.send(EventInput{"order/paid", {{"order", 7}}});
    for (auto& th : senders) th.join();
    e.stop();  // drains what was queued; a second start finishes the rest
    e.start({.threads = 4, .lease = 5s, .poll = 20ms});
    CHECK(wait_until("SELECT count(*) FROM runs WHERE status = 'completed'", kEach + 1) ==
          kEach + 1);
    e.stop();

    CHECK(paid.waits_resumed == 1);
    CHECK(e.store().get_run(order.run_ids[0])->status == "completed");
    CHECK(by_key.size() == kEach);
    for (const auto& [key, sends] : by_key) {
        REQUIRE(sends.size() == kSenders);
        int fresh = 0;
        for (const auto& sent : sends) {
            CHECK(sent.run_ids.size() == 1);
            CHECK(sent.run_ids == sends.front().run_ids);  // every repeat names the first run
            CHECK(sent.event_id == sends.front().event_id);
            if (!sent.duplicate) ++fresh;
        }
        CHECK(fresh == 1);
    }
    CHECK(count("SELECT count(*) FROM events WHERE name = 'item/added'") == kEach);
    CHECK(count("SELECT count(*) FROM runs WHERE workflow_id = 'counted'") == kEach);
    CHECK(count("SELECT count(*) FROM steps WHERE step_key = 'a'") == kEach);
}

TEST_CASE("a send that fails in a shared batch fails alone: the sends beside it land") {
    TestDb t;
    storage::Migrator(t.db(), {storage::run_store_component()}).apply();
    // The database refuses events named "refused": the statement of a batch that holds one
    // fails as a whole (on Postgres, sends while workers run share one statement).
    if (t.db().backend() == storage::Backend::postgres) {
        t.db().exec(
            "CREATE FUNCTION refuse_event() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.name = 'refused' THEN RAISE EXCEPTION 'event refused by a trigger'; END IF; "
            "RETURN NEW; END $$");
        t.db().exec(
            "CREATE TRIGGER refuse_event BEFORE INSERT ON events FOR EACH ROW "
            "EXECUTE FUNCTION refuse_event()");
    } else {
        t.db().exec(
            "CREATE TRIGGER refuse_event BEFORE INSERT ON events WHEN NEW.name = 'refused' "
            "BEGIN SELECT RAISE(ABORT, 'event refused by a trigger'); END");
    }
    engine::SystemClock clock;
    Engine e(t.db(), clock);
    e.add(workflow("taken").on_event("taken").run(
        [](Context& ctx) { return ctx.step("a", [] { return 1; }); }));
    e.add(workflow("never").on_event("refused").run(
        [](Context& ctx) { return ctx.step("a", [] { return 1; }); }));
    e.start({.threads = 4, .lease = 5s, .poll = 20ms});
    constexpr int kSenders = 6, kEach = 30;
    std::atomic<int> sent{0}, refused{0}, wrong{0};
    std::vector<std::thread> senders;
    for (int s = 0; s < kSenders; ++s) {
        senders.emplace_back([&, s] {
            for (int i = 0; i < kEach; ++i) {
                const bool bad = (s + i) % 5 == 0;
                try {
                    const auto r =
                        e.send(EventInput{bad ? "refused" : "taken", {{"s", s}, {"i", i}}});
                    if (bad || r.run_ids.size() != 1) ++wrong;
                    ++sent;
                } catch (const std::exception&) {
                    if (!bad) ++wrong;
                    ++refused;
                }
            }
        });
    }
    for (auto& th : senders) th.join();
    const int taken = sent.load();
    for (int i = 0; i < 100 && e.await_runs_ended(taken - 1, 100ms) < taken; ++i) {
    }
    e.stop();
    CHECK(wrong == 0);  // every refused send threw, every other one returned its run
    CHECK(refused == kSenders * kEach / 5);
    CHECK(taken == kSenders * kEach - refused);
    auto count = [&](const std::string& sql) {
        return t.db().exec(sql).front().get<std::int64_t>(0);
    };
    CHECK(count("SELECT count(*) FROM events WHERE name = 'taken'") == taken);
    CHECK(count("SELECT count(*) FROM events WHERE name = 'refused'") == 0);
    CHECK(count("SELECT count(*) FROM runs WHERE workflow_id = 'never'") == 0);
    CHECK(count("SELECT count(*) FROM runs WHERE status = 'completed'") == taken);
}

TEST_CASE("a send while workers run hands its runs to idle threads, or queues them") {
    TestDb t;
    storage::Migrator(t.db(), {storage::run_store_component()}).apply();
    engine::SystemClock clock;
    Engine e(t.db(), clock);
    std::atomic<bool> holding{false}, release{false};
    e.add(workflow("quick").on_event("quick").run(
        [](Context& ctx) { return ctx.step("one", [] { return 1; }); }));
    e.add(workflow("hold").on_event("hold").run([&](Context& ctx) {
        return ctx.step("wait", [&] {
            holding = true;
            while (!release) std::this_thread::sleep_for(1ms);
            return 1;
        });
    }));
    e.start({.threads = 1, .lease = 30s, .poll = 50ms});
    auto status = [&](const std::string& id) { return e.store().get_run(id)->status; };
    auto await_ended = [&](std::int64_t n) {  // until n runs ended, 10 s at most
        for (int i = 0; i < 100 && e.await_runs_ended(n - 1, 100ms) < n; ++i) {
        }
    };

    // The thread is idle: the run is written claimed by this engine and runs at once.
    const auto first = e.send(EventInput{"quick"}).run_ids.at(0);
    await_ended(1);
    CHECK(status(first) == "completed");
    CHECK(e.store().get_run(first)->worker == e.worker_id());

    // The only thread is busy: the next run waits in the queue, unclaimed, until it frees.
    const auto held = e.send(EventInput{"hold"}).run_ids.at(0);
    for (int i = 0; i < 1000 && !holding; ++i) std::this_thread::sleep_for(5ms);
    REQUIRE(holding);
    const auto queued = e.send(EventInput{"quick", {{"n", 2}}}).run_ids.at(0);
    CHECK(status(queued) == "queued");
    CHECK(t.db()
              .exec("SELECT count(*) FROM queue WHERE run_id = $1 AND lease_owner IS NULL", queued)
              .front()
              .get<int>(0) == 1);
    release = true;
    await_ended(3);
    e.stop();
    CHECK(status(held) == "completed");
    CHECK(status(queued) == "completed");
}
